"""Run store -> plain view data for the report pages.

The report reads only what the store holds and asks each task class how to read it
(`headline_metrics`, `present`): the tasks know their own score shapes, the report does not.
A task whose class is no longer registered still reports, through the base class's generic
reading, so an old store never breaks a new report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from evalharness.errors import InputError
from evalharness.stats.intervals import CI_METHODS
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import Task
from evalharness.tasks.registry import stored_task_class
from evalharness.tasks.views import SampleView

#: Leaderboard columns shown for a task without headline metrics (e.g. one no longer registered).
FALLBACK_HEADLINE_LIMIT = 6


@dataclass
class TaskResult:
    """One task of one run, as stored; `metrics` may hold non-numeric entries (labels)."""

    task: str
    n: int
    failures: int
    metrics: dict[str, Any]
    ci: dict[str, tuple[float, float]]
    counts: dict[str, Any]
    info: dict[str, Any]
    headline: list[str]
    known: bool
    scored: bool
    #: metric -> how its interval was made (a name in `evalharness.stats.intervals.CI_METHODS`);
    #: empty for runs stored before it was recorded.
    ci_method: dict[str, str] = field(default_factory=dict)

    def number(self, metric: str) -> float | None:
        """The metric as a finite float, or None (missing, textual or not finite)."""
        return as_number(self.metrics.get(metric))

    def interval(self, metric: str) -> tuple[float, float] | None:
        return self.ci.get(metric)

    def interval_method(self, metric: str) -> str | None:
        """What the metric's interval is, for a reader: "name: description", or None."""
        name = self.ci_method.get(metric) if metric in self.ci else None
        if name is None:
            return None
        return f"{name}: {CI_METHODS[name]}" if name in CI_METHODS else name


@dataclass
class RunInfo:
    """One run: its identity, provenance and per-task results, keyed by task name."""

    run_id: str
    created_at: float
    updated_at: float
    status: str
    model: str
    judge: str | None
    spec: dict[str, Any]
    provenance: dict[str, Any]
    tasks: dict[str, TaskResult] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short name for legends and menus: the model's last path part and the id prefix."""
        return f"{short_model(self.model)} · {self.run_id[:8]}"

    @property
    def date(self) -> str:
        return format_time(self.created_at)


@dataclass
class SampleRecord:
    """One stored sample with the task's readable view of it."""

    sample_id: str
    position: int
    view: SampleView
    scores: dict[str, Any] | None
    fallback: bool = False


def as_number(value: Any) -> float | None:
    """A finite float from a stored value; booleans and text are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def short_model(model: str) -> str:
    """`hf:/models/llama-3-8b` -> `llama-3-8b`; `openai:gpt-4o` -> `gpt-4o`."""
    _, _, rest = model.partition(":") if ":" in model else ("", "", model)
    tail = rest.rstrip("/").rsplit("/", 1)[-1]
    return tail or model


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def task_class(name: str, settings: Mapping[str, Any] | None = None) -> type[Task] | None:
    """The class that reads a stored task (`stored_task_class`), or None when it is no longer
    known; `settings` (the task's stored settings) identify a task.yaml folder's runs."""
    return stored_task_class(name, settings)


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = as_number(value[0]), as_number(value[1])
        if low is not None and high is not None:
            return (low, high)
    return None


def headline_for(
    cls: type[Task] | None, settings: Mapping[str, Any], metrics: Mapping
) -> list[str]:
    """The task's headline metrics; for unknown tasks (or none declared) the first numeric ones."""
    if cls is not None:
        try:
            names = [str(m) for m in cls.headline_metrics(settings)]
        except Exception:  # noqa: BLE001 - stored settings from an older version of the task
            names = []
        if names:
            return names
    numeric = [k for k in sorted(metrics) if as_number(metrics[k]) is not None]
    return numeric[:FALLBACK_HEADLINE_LIMIT]


def headline_union(results: Iterable[TaskResult]) -> list[str]:
    """Every headline metric the results declare, in first-seen order: the leaderboard's
    columns, the task table's leading rows and the generic chart list the same metrics."""
    names: list[str] = []
    for result in results:
        names += [m for m in result.headline if m not in names]
    return names


def _task_result(row: dict[str, Any]) -> TaskResult:
    stored = row["metrics"] or {}
    metrics = dict(stored.get("metrics") or {})
    ci = {k: iv for k, v in (stored.get("ci") or {}).items() if (iv := _interval(v)) is not None}
    info = row["info"] or {}
    cls = task_class(row["task"], info.get("settings"))
    return TaskResult(
        task=row["task"],
        n=int(stored.get("n", row["n"]) or 0),
        failures=int(stored.get("failures", row["failures"]) or 0),
        metrics=metrics,
        ci=ci,
        counts=dict(stored.get("counts") or {}),
        info=info,
        headline=headline_for(cls, info.get("settings") or {}, metrics),
        known=cls is not None,
        scored=row["metrics"] is not None,
        ci_method={k: v for k, v in (stored.get("ci_method") or {}).items() if isinstance(v, str)},
    )


def resolve_runs(store: RunStore, references: Sequence[str] | None) -> list[str]:
    """Run ids from user references ('latest', ids, prefixes); every stored run when None."""
    if references is None:
        runs = store.list_runs()
        if not runs:
            raise InputError(f"{store.path}: no runs stored; run `evalharness run` first")
        return [r["run_id"] for r in runs]
    resolved = [store.resolve_run(ref.strip()) for ref in references if ref.strip()]
    if not resolved:
        raise InputError("--runs names no run")
    return list(dict.fromkeys(resolved))


def load_runs(store: RunStore, run_ids: Sequence[str]) -> list[RunInfo]:
    """Runs with their task results, oldest first (run colours and 'earliest run' follow this)."""
    runs = []
    for run_id in run_ids:
        row = store.get_run(run_id)
        if row is None:
            raise InputError(f"no run {run_id!r} in {store.path}")
        run = RunInfo(
            run_id=row["run_id"],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            status=str(row["status"]),
            model=str(row["model"]),
            judge=row["judge"],
            spec=row["spec"] or {},
            provenance=row["provenance"] or {},
        )
        run.tasks = {t["task"]: _task_result(t) for t in store.get_tasks(run_id)}
        runs.append(run)
    runs.sort(key=lambda r: (r.created_at, r.run_id))
    return runs


def _present(
    cls: type[Task] | None,
    data: dict[str, Any],
    scores: dict[str, Any] | None,
    responses: dict[str, Any],
    verdicts: dict[str, Any],
) -> tuple[SampleView, bool]:
    """The task's view of a sample; the base class's generic view if the task cannot read it.

    A stored sample written by an older version of a task may not have the fields its current
    `present` expects; one odd sample must not stop the whole report, so it falls back and the
    page says how many did.
    """
    if cls is not None:
        try:
            return cls.present(data, scores, responses, verdicts), False
        except Exception:  # noqa: BLE001 - see docstring
            pass
    view = Task.present(data, scores, responses, verdicts)
    if view.score is None and scores:
        view.score = as_number(scores.get("score"))
    return view, cls is not None


def sample_records(store: RunStore, run_id: str, task: str) -> Iterator[SampleRecord]:
    """Every stored sample of a run's task with its view, in the run's order.

    Three queries per run and task (samples, responses, verdicts), never one per sample.
    """
    stored = [t for t in store.get_tasks(run_id) if t["task"] == task]
    cls = task_class(task, (stored[0]["info"] or {}).get("settings") if stored else None)
    samples = store.get_samples(run_id, task)
    responses = store.get_run_responses(run_id, task)
    verdicts: dict[str, dict[str, Any]] = {}
    for (sample_id, slot), verdict in store.get_run_verdicts(run_id, task).items():
        verdicts.setdefault(sample_id, {})[slot] = verdict
    for position, sample in enumerate(samples):
        sid = sample["sample_id"]
        view, fallback = _present(
            cls, sample["data"], sample["scores"], responses.get(sid, {}), verdicts.get(sid, {})
        )
        yield SampleRecord(sid, position, view, sample["scores"], fallback)
