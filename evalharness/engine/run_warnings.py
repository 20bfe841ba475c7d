"""The one-line warnings that travel with a run's numbers, in `run` and again in `show`.

They are computed from what the store keeps (the stored spec and per-task entries), not from
the live run, so `evalharness show RUN` gives exactly the warnings `evalharness run` gave, and
scripts reading `--json` see them too.
"""

from __future__ import annotations

from typing import Any

from evalharness.engine.scoring import TRUNCATED_COUNT
from evalharness.tasks.registry import available_tasks


def run_warnings(spec: dict[str, Any], tasks: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Warnings about a run, from the spec and per-task entries it stored (so `show` gives the
    ones `run` gave).

    A task judged by the evaluated model grades its own answers: fine for trying the pipeline
    out, meaningless as a score. Scripts and CI read `--json`, so it must say so there too.
    Each task adds its own (`Task.warnings`) from the settings stored in the spec. A task whose
    samples had inputs cut to fit a model's context (`TRUNCATED_COUNT` in its counts) says how
    many: their scores saw less than the whole input.
    """
    warnings = []
    self_judged = spec.get("self_judged") or []
    if self_judged:
        warnings.append(
            f"{', '.join(self_judged)} judged by the model itself: a demonstration of the "
            "pipeline, not a meaningful judge; pass --judge for real grading"
        )
    registered = available_tasks()
    for name, settings in (spec.get("task_settings") or {}).items():
        if name in registered:  # a run stored by a task no longer installed has none
            warnings.extend(f"{name}: {w}" for w in registered[name].warnings(settings))
    for name, entry in (tasks or {}).items():
        cut = ((entry or {}).get("counts") or {}).get(TRUNCATED_COUNT, 0)
        if cut:
            warnings.append(
                f"{name}: {cut} of {entry.get('n', '?')} samples had an input longer than the "
                "model's (or judge's) context, cut to fit (a prompt loses its start, a reward "
                "model's input its end): their scores saw less than the whole input"
            )
    return warnings
