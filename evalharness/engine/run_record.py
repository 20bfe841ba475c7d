"""What a run writes about itself: its id, provenance and spec, and how far it got.

The run id is a hash of what the run computes (model, judge, tasks with their options, data and
baseline, limit, seed) and of nothing else, so "the same command" always means "the same run":
the store finds it, the outcome says it was resumed, and every answer and verdict already paid
for is reused. A run is marked `interrupted` when anything stops it and `partial` when items
stay unjudged; re-running the same command finishes it. Provenance (package versions, devices)
is recorded beside the id, never in it: the same run on another machine keeps its id.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from evalharness.backends import Backend
from evalharness.engine.requests import canonical_json, sha256_hex
from evalharness.engine.run_types import RunPlan
from evalharness.store import provenance
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import Task, TaskData


def describe_tasks(
    tasks: Sequence[Task],
    loaded: dict[str, TaskData],
    baselines: dict[str, dict[str, str] | None],
    judges: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """task name -> what the store keeps about it (`RunPlan.task_info`)."""
    return {
        task.name: {
            "options": task.options,
            "data_hash": loaded[task.name].data_hash,
            "source": loaded[task.name].source,
            "settings": loaded[task.name].settings,
            "n_samples": len(loaded[task.name].samples),
            "baseline": baselines[task.name],
            "judge_hash": judges[task.name].identity_hash if task.name in judges else None,
        }
        for task in tasks
    }


def run_id_for(plan: RunPlan) -> str:
    """The run's id: twelve hex digits of the hash of what it computes."""
    judge_hashes = sorted({j.identity_hash for j in plan.unique_judges})
    run_key = {
        "model": plan.backend.identity_hash,
        # One judge keeps the plain hash; several are listed per task.
        "judge": (
            judge_hashes[0]
            if len(judge_hashes) == 1
            else {name: j.identity_hash for name, j in sorted(plan.judges.items())} or None
        ),
        "tasks": {
            name: {k: info[k] for k in ("options", "data_hash", "baseline")}
            # Only tasks with extra inputs add the key: other run ids stay as they were.
            | ({"inputs": plan.loaded[name].extra_inputs} if plan.loaded[name].extra_inputs else {})
            for name, info in plan.task_info.items()
        },
        "limit": plan.spec.limit,
        "seed": plan.spec.seed,
    }
    return sha256_hex(canonical_json(run_key))[:12]


def device_records(backend: Backend, judges: dict[str, Any]) -> dict[str, Any]:
    """Where the model and each local judge ran (`Backend.device_record`), for provenance."""
    records: dict[str, Any] = {"model": backend.device_record()}
    judged = {
        name: judge.backend.device_record()
        for name, judge in sorted(judges.items())
        if judge.backend is not None and judge.backend is not backend
    }
    found = {name: record for name, record in judged.items() if record is not None}
    if found:
        unique = {json.dumps(r, sort_keys=True) for r in found.values()}
        records["judge"] = next(iter(found.values())) if len(unique) == 1 else found
    return records


def collect_provenance(plan: RunPlan) -> dict[str, Any]:
    """What the numbers depend on beyond the run id (`evalharness.store.provenance`)."""
    unique_judges = plan.unique_judges
    return provenance.collect(
        model_identity=plan.backend.identity,
        judge_identity=(
            unique_judges[0].identity
            if len(unique_judges) == 1
            else {name: j.identity for name, j in plan.judges.items()} or None
        ),
        tasks=plan.task_info,
        seed=plan.spec.seed,
        model_records=plan.backend.recorded_metadata(),
        devices=device_records(plan.backend, plan.judges),
    )


def stored_spec(plan: RunPlan) -> dict[str, Any]:
    """The run's settings as the store keeps them (for `show`, and `run_warnings` from it)."""
    spec = plan.spec
    return {
        "tasks": spec.tasks,
        "task_options": spec.task_options,
        "limit": spec.limit,
        "seed": spec.seed,
        "judge_mode": spec.judge_mode,
        "self_judged": plan.self_judged,
        # What `run_warnings` needs to give each task's warnings again from the store.
        "task_settings": {name: info["settings"] for name, info in plan.task_info.items()},
    }


def record_start(
    store: RunStore, plan: RunPlan, run_id: str, spec: dict[str, Any], prov: dict[str, Any]
) -> bool:
    """Open (or reopen) the run in the store with its identities, tasks and samples; True when
    the run was there already, i.e. this invocation resumes it."""
    resumed = store.begin_run(
        run_id, model=plan.spec.model.raw, judge=plan.judge_names, spec=spec, provenance=prov
    )
    store.put_identity(plan.backend.identity_hash, plan.backend.identity)
    for judge in plan.unique_judges:
        store.put_identity(judge.identity_hash, judge.identity)
    for task in plan.tasks:
        data = plan.loaded[task.name]
        store.put_task(run_id, task.name, len(data.samples), plan.task_info[task.name])
        store.put_samples(run_id, task.name, [(s.id, s.data) for s in data.samples])
    return resumed


@contextlib.contextmanager
def marked_interrupted(store: RunStore, run_id: str) -> Iterator[None]:
    """Mark the run `interrupted` if anything (an error, Ctrl-C) stops the work inside; what
    was stored before stays, and the same command resumes from there."""
    try:
        yield
    except BaseException:
        store.finish_run(run_id, status="interrupted")
        raise


def judge_http_errors(judges: Sequence[Any]) -> dict[str, int]:
    """HTTP errors the judges' backends met (and retried), summed by kind."""
    errors: dict[str, int] = defaultdict(int)
    for judge in judges:
        for kind, count in (judge.backend.error_counts() if judge.backend else {}).items():
            errors[kind] += count
    return dict(errors)
