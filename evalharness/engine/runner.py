"""The runner: tasks → requests → backend (through the cache) → judges → scores → store.

Every call that costs model or judge time is looked up in the store first and written back as
soon as its batch finishes, so a re-run of the same command makes zero calls and an interrupted
run resumes with only the missing work. The run id is derived from what the run computes (model,
judge, tasks, data, limit, seed), so "the same command" always means "the same run".

This module is the order of the steps and nothing more; each step has its own module:
`judge_plan` (which judge, what it costs), `baselines`, `run_record` (id, provenance, status),
`generation` (answers through the response cache), `judging` (verdicts through the verdict
cache) and `scoring`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from evalharness.backends import Backend, load_backend
from evalharness.engine.baselines import attach_baseline
from evalharness.engine.generation import generate
from evalharness.engine.judge_plan import build_judges, estimate_judge_calls
from evalharness.engine.judging import JudgeStats, judge_tasks
from evalharness.engine.progress import Progress, no_progress
from evalharness.engine.run_record import (
    collect_provenance,
    describe_tasks,
    judge_http_errors,
    marked_interrupted,
    record_start,
    run_id_for,
    stored_spec,
)
from evalharness.engine.run_types import RunOutcome, RunPlan, RunSpec, Verdicts
from evalharness.engine.run_warnings import run_warnings
from evalharness.engine.scoring import score_tasks
from evalharness.errors import InputError
from evalharness.store.run_store import RunStore
from evalharness.tasks.registry import task_classes

if TYPE_CHECKING:  # for annotations only: the judges are imported when a run builds one
    from evalharness.judges.base import Judge


class Runner:
    """Runs `RunSpec`s into one store, counting the calls it makes (`calls`, `judge_stats`)."""

    def __init__(
        self,
        store: RunStore,
        progress: Progress = no_progress,
        notify: Callable[[str], None] = lambda message: None,
        *,
        use_backend: Backend | None = None,
        use_judge: Judge | None = None,
    ) -> None:
        """`use_backend` and `use_judge`, when given, replace the ones the spec would build:
        importers whose answers and ratings are keyed by the task's own question ids
        (FastChat's files) build them from the questions before the run starts."""
        self.store = store
        self.progress = progress
        self.notify = notify
        self.use_backend = use_backend
        self.use_judge = use_judge
        self.calls = {"model": 0, "judge": 0, "baseline": 0}
        self.judge_stats = JudgeStats()

    def run(self, spec: RunSpec) -> RunOutcome:
        started = time.perf_counter()
        plan = self._plan(spec)
        if plan.judges:
            estimate_judge_calls(
                plan.tasks,
                plan.loaded,
                plan.judges,
                spec.max_judge_calls,
                self.judge_stats,
                self.notify,
            )
        run_id = run_id_for(plan)
        prov = collect_provenance(plan)
        stored = stored_spec(plan)
        resumed = record_start(self.store, plan, run_id, stored, prov)
        with marked_interrupted(self.store, run_id):
            results = self._execute(plan, run_id)
        # Items left unjudged (failed requests, budget) make the run partial; re-run to finish.
        status = "partial" if self.judge_stats.unjudged else "complete"
        self.store.finish_run(run_id, status=status)
        self.judge_stats.http_errors = judge_http_errors(plan.unique_judges)
        return RunOutcome(
            run_id=run_id,
            model=spec.model.raw,
            judge=plan.judge_names,
            tasks=results,
            # Baseline answers generated for pairwise tasks are listed only when there were any.
            calls_made={k: v for k, v in self.calls.items() if k != "baseline" or v},
            resumed=resumed,
            seconds=time.perf_counter() - started,
            status=status,
            judging=self.judge_stats.to_json() if plan.judges else {},
            warnings=run_warnings(stored, results),
            devices=prov.get("devices", {}),
        )

    def _plan(self, spec: RunSpec) -> RunPlan:
        """Tasks, data, model, judges and baselines, in the order that fails cheapest first."""
        # Tasks first: a misspelt task name fails before a model is resolved and hashed.
        tasks = [
            task_class(spec.task_options.get(name), spec.seed)
            for name in spec.tasks
            for task_class in task_classes(name)
        ]
        names = [task.name for task in tasks]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise InputError(f"--tasks runs the task {twice[0]!r} twice")
        backend = self.use_backend or load_backend(spec.model)
        loaded = {task.name: task.load(spec.limit) for task in tasks}
        judges = build_judges(spec, tasks, backend, self.use_judge)
        baselines = {
            task.name: attach_baseline(
                self.store,
                task,
                loaded[task.name],
                spec.model.device,
                progress=self.progress,
                calls=self.calls,
            )
            for task in tasks
        }
        task_info = describe_tasks(tasks, loaded, baselines, judges)
        return RunPlan(spec, tasks, loaded, backend, judges, task_info)

    def _execute(self, plan: RunPlan, run_id: str) -> dict[str, dict[str, Any]]:
        """Answers, then verdicts (each judge over the tasks it grades), then scores."""
        responses = generate(
            self.store,
            plan.backend,
            plan.tasks,
            plan.loaded,
            run_id=run_id,
            progress=self.progress,
            calls=self.calls,
        )
        verdicts: Verdicts = defaultdict(dict)
        for judge in plan.unique_judges:
            verdicts.update(
                judge_tasks(
                    self.store,
                    judge,
                    [t for t in plan.tasks if plan.judges.get(t.name) is judge],
                    plan.loaded,
                    responses,
                    run_id=run_id,
                    budget=plan.spec.max_judge_calls,
                    progress=self.progress,
                    calls=self.calls,
                    stats=self.judge_stats,
                )
            )
        return score_tasks(self.store, run_id, plan.tasks, plan.loaded, responses, verdicts)
