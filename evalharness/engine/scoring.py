"""A run's last step: each sample scored from its answers and verdicts, then aggregated per task.

Per-sample scores are stored so reports and paired comparisons can go back to every sample;
the task's aggregate (metrics, intervals, counts) is what `run` prints. The count of samples
whose input was cut to fit a context is added here, from the answers and verdicts themselves,
so every task reports it the same way without knowing about it.

Not `evalharness score` (the log-likelihoods of given continuations): that is `loglikelihood`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from evalharness.engine.run_types import Responses, Verdicts
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import Sample, Task, TaskData

#: The per-task count of samples with an input cut to fit a model's context (`counts`).
#: Named apart from tasks' own counts (TrueMatch's `truncated` counts descriptions it cut).
TRUNCATED_COUNT = "context_truncated"


def any_truncated(results: Iterable[Any]) -> bool:
    """Whether any of these results (or stored verdicts) had an input cut to fit a context."""
    return any(
        (r.get("truncated") if isinstance(r, dict) else getattr(r, "truncated", False))
        for r in results
    )


def score_tasks(
    store: RunStore,
    run_id: str,
    tasks: Sequence[Task],
    loaded: dict[str, TaskData],
    responses: Responses,
    verdicts: Verdicts,
) -> dict[str, dict[str, Any]]:
    """task name -> its stored entry (`n`, `failures`, `metrics`, `ci`, `ci_method`, `counts`)."""
    results = {}
    for task in tasks:
        samples: list[Sample] = loaded[task.name].samples
        scores = {
            s.id: task.score(s, responses[(task.name, s.id)], verdicts[(task.name, s.id)])
            for s in samples
        }
        store.put_sample_scores(run_id, task.name, scores)
        outcome = task.aggregate(samples, [scores[s.id] for s in samples])
        counts = dict(outcome.counts)
        cut = sum(
            any_truncated(responses[(task.name, s.id)].values())
            or any_truncated(verdicts[(task.name, s.id)].values())
            for s in samples
        )
        if cut:  # absent means none, as in runs stored before it was counted
            counts[TRUNCATED_COUNT] = cut
        entry = {
            "n": len(samples),
            "failures": outcome.failures,
            "metrics": outcome.metrics,
            "ci": {k: list(v) for k, v in outcome.ci.items()},
            "ci_method": {k: m for k, m in outcome.ci_method.items() if k in outcome.ci},
            "counts": counts,
        }
        store.put_task_metrics(run_id, task.name, entry, outcome.failures)
        results[task.name] = entry
    return results
