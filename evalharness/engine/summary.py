"""A stored run's summary in the shape `evaluate` returns, read back without running anything.

`evalharness show` prints it with the same table as `evalharness run`; the warnings are
recomputed from the stored spec and metrics, so a run stored by an older version gets today's.
"""

from __future__ import annotations

from typing import Any


def stored_run_summary(store: Any, run_id: str) -> dict[str, Any]:
    """The run's model, judge, status, per-task metrics, warnings and provenance."""
    from evalharness.engine.run_warnings import run_warnings

    run = store.get_run(run_id)
    tasks = {}
    for task in store.get_tasks(run_id):
        entry = task["metrics"] or {"n": task["n"], "failures": task["failures"], "metrics": {}}
        tasks[task["task"]] = entry
    return {
        "run_id": run_id,
        "model": run["model"],
        "judge": run["judge"],
        "status": run["status"],
        "tasks": tasks,
        "calls_made": {"model": 0, "judge": 0},
        "warnings": run_warnings(run["spec"], tasks),
        "provenance": run["provenance"],
        "devices": run["provenance"].get("devices", {}),
    }
