"""A pairwise task's baseline answers: read from a stored run, or generated now.

Pairwise tasks (AlpacaEval-style win rates) judge the model against a baseline. `--baseline`
names either a run in the store (its answers are reused, never regenerated) or a model spec
(its answers are generated through the same response cache, so they too are paid for once).
Which one it was goes into the run's identity: a different baseline is a different run.
"""

from __future__ import annotations

from evalharness.backends import load_backend
from evalharness.backends.spec import parse_model_spec
from evalharness.engine.generation import generate
from evalharness.engine.progress import Progress
from evalharness.engine.requests import result_from_json
from evalharness.errors import InputError
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import Task, TaskData


def attach_baseline(
    store: RunStore,
    task: Task,
    data: TaskData,
    device: str = "auto",
    *,
    progress: Progress,
    calls: dict[str, int],
) -> dict[str, str] | None:
    """Give a pairwise task its baseline answers; return what identifies them (None: the task
    has no baseline). Answers generated now count in `calls["baseline"]`."""
    source = task.baseline_source()
    if not source:
        return None
    matches = [
        run_id
        for run_id in store.find_runs(source)
        if any(t["task"] == task.name for t in store.get_tasks(run_id))
    ]
    if len(matches) == 1:
        stored = store.get_run_responses(matches[0], task.name)
        missing = [s.id for s in data.samples if s.id not in stored]
        if missing:
            raise InputError(
                f"baseline run {matches[0]} has no {task.name} answers for sample "
                f"{missing[0]} ({len(missing)} missing); run the baseline on the same data"
            )
        task.attach_baseline(
            {
                sid: {slot: result_from_json(r) for slot, r in slots.items()}
                for sid, slots in stored.items()
            }
        )
        return {"run": matches[0]}
    if len(matches) > 1:
        raise InputError(f"--baseline {source!r} matches runs {', '.join(matches)}")
    try:
        # A baseline model runs where the evaluated one does.
        baseline_spec = parse_model_spec(source, device=device)
    except InputError:
        raise InputError(
            f"--baseline {source!r} is neither a run in {store.path} with task "
            f"{task.name} nor a model spec"
        ) from None
    baseline = load_backend(baseline_spec)
    answers = generate(
        store,
        baseline,
        [task],
        {task.name: data},
        run_id=None,
        progress=progress,
        calls=calls,
        counter="baseline",
    )
    task.attach_baseline({s.id: dict(answers[(task.name, s.id)]) for s in data.samples})
    return {"model": baseline.identity_hash, "spec": source}
