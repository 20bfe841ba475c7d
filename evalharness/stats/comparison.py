"""Compare two stored runs sample by sample: deltas, paired tests, per-sample diffs, a CI gate.

Run A is the baseline and run B the candidate: every delta is B - A. Each task states which of
its metrics are means of per-sample outcomes (`Task.outcomes`); those are paired on the samples
both runs scored and tested (McNemar for 0/1 outcomes, Wilcoxon for ratings and numbers), with a
CI of the delta (`ci_method` names it): Newcombe's paired interval for one 0/1 outcome per
sample, which keeps its width when the runs agree everywhere, and a Student t interval over
samples otherwise. When a sample has several
units (MT-Bench's turns) the test is clustered too: Wilcoxon on each sample's mean difference
(`wilcoxon-clustered`).
Metrics that are not means (micro-F1, a fitted length-controlled win rate) are reported as
stored, without a test.

A gated metric is a regression when B is worse by more than `fail_if_worse` and the paired test
says so at level `alpha`. By default the gate is each task's headline metrics that have a paired
test; a metric without one is gated only when named, and then judged on its delta alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from evalharness.errors import InputError
from evalharness.stats.paired import (
    DELTA_CI_METHOD,
    RATE_DELTA_CI_METHOD,
    delta_ci,
    mcnemar_p,
    paired_rate_delta_ci,
    wilcoxon_p,
)
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import Outcome, Task
from evalharness.tasks.registry import stored_task_class

#: Task info fields whose difference makes two runs' scores not comparable as they stand.
_INFO_FIELDS = {
    "data_hash": "data",
    "judge_hash": "judge",
    "settings": "task settings",
    "source": "data source",
}


@dataclass
class MetricComparison:
    """One metric of one task, A against B."""

    metric: str
    a: float | None
    b: float | None
    delta: float | None
    higher_is_better: bool = True
    kind: str | None = None
    test: str | None = None
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    ci_method: str | None = None
    n_pairs: int = 0
    n_samples: int = 0
    better: int = 0
    worse: int = 0
    same: int = 0
    significant: bool | None = None
    gated: bool = False
    regression: bool = False

    @property
    def worse_by(self) -> float | None:
        """How much worse B is than A, in the metric's units (negative when B is better)."""
        if self.delta is None:
            return None
        return -self.delta if self.higher_is_better else self.delta


@dataclass
class TaskComparison:
    task: str
    n_a: int
    n_b: int
    n_shared: int
    sample_metric: str | None
    metrics: list[MetricComparison]
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Comparison:
    run_a: dict[str, Any]
    run_b: dict[str, Any]
    alpha: float
    fail_if_worse: float | None
    warnings: list[str]
    tasks: dict[str, TaskComparison]
    only_in_a: list[str]
    only_in_b: list[str]

    @property
    def regressions(self) -> list[str]:
        return [
            f"{name}.{m.metric}"
            for name, task in self.tasks.items()
            for m in task.metrics
            if m.regression
        ]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def to_json(self) -> dict[str, Any]:
        tasks = {}
        for name, task in self.tasks.items():
            # Field by field rather than asdict(task): asdict deep-copies every per-sample row.
            entry = {f.name: getattr(task, f.name) for f in fields(task) if f.name != "task"}
            entry["metrics"] = []
            for metric in task.metrics:
                row = asdict(metric)
                row["worse_by"] = metric.worse_by
                row["ci"] = list(metric.ci) if metric.ci is not None else None
                entry["metrics"].append(row)
            tasks[name] = entry
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "alpha": self.alpha,
            "fail_if_worse": self.fail_if_worse,
            "warnings": self.warnings,
            "tasks": tasks,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "regressions": self.regressions,
            "passed": self.passed,
        }


def compare_runs(
    store: RunStore,
    run_a: str,
    run_b: str,
    *,
    alpha: float = 0.05,
    fail_if_worse: float | None = None,
    metrics: Sequence[str] | None = None,
) -> Comparison:
    """Compare two stored runs (ids as stored).

    `metrics` (TASK.METRIC) lists the gated metrics; by default each task's headline metrics
    that have a paired test are gated.
    """
    if not 0.0 < alpha < 1.0:
        raise InputError(f"--alpha must be between 0 and 1, not {alpha}")
    runs = {}
    for role, run_id in (("A", run_a), ("B", run_b)):
        run = store.get_run(run_id)
        if run is None:
            raise InputError(f"no run {run_id!r} in {store.path}")
        runs[role] = run
    tasks_a = {t["task"]: t for t in store.get_tasks(run_a) if t["metrics"] is not None}
    tasks_b = {t["task"]: t for t in store.get_tasks(run_b) if t["metrics"] is not None}
    shared = [name for name in tasks_a if name in tasks_b]
    gates = _parse_gates(metrics, shared)
    warnings = _provenance_warnings(runs["A"], runs["B"], tasks_a, tasks_b, shared)
    compared = {}
    for name in shared:
        settings = tasks_b[name]["info"].get("settings") or {}
        task_class = stored_task_class(name, settings) or Task
        compared[name] = _compare_task(
            name,
            task_class,
            (tasks_a[name], store.get_samples(run_a, name)),
            (tasks_b[name], store.get_samples(run_b, name)),
            gated=gates.get(name),
            alpha=alpha,
            fail_if_worse=fail_if_worse,
        )
        entry = compared[name]
        if entry.n_shared < max(entry.n_a, entry.n_b):
            warnings.append(
                f"{name}: only {entry.n_shared} samples scored in both runs "
                f"(A has {entry.n_a}, B has {entry.n_b}); tests use the shared ones"
            )
    return Comparison(
        run_a=_run_summary(runs["A"]),
        run_b=_run_summary(runs["B"]),
        alpha=alpha,
        fail_if_worse=fail_if_worse,
        warnings=warnings,
        tasks=compared,
        only_in_a=sorted(set(tasks_a) - set(tasks_b)),
        only_in_b=sorted(set(tasks_b) - set(tasks_a)),
    )


def _run_summary(run: Mapping[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in ("run_id", "model", "judge", "created_at")}


def _parse_gates(metrics: Sequence[str] | None, shared: Sequence[str]) -> dict[str, set[str]]:
    """task -> gated metric names; None in the result means 'the task's headline metrics'."""
    if metrics is None:
        return {}
    gates: dict[str, set[str]] = defaultdict(set)
    for name in metrics:
        task, dot, metric = name.partition(".")
        if not dot or not metric:
            raise InputError(f"gated metric {name!r} is not TASK.METRIC")
        if task not in shared:
            raise InputError(
                f"gated metric {name!r}: task {task} is not scored in both runs "
                f"(shared: {', '.join(shared) or 'none'})"
            )
        gates[task].add(metric)
    # Tasks not named are not gated at all when the caller lists metrics explicitly.
    return {task: gates.get(task, set()) for task in shared}


def _compare_task(
    name: str,
    task_class: type[Task],
    a: tuple[dict[str, Any], list[dict[str, Any]]],
    b: tuple[dict[str, Any], list[dict[str, Any]]],
    *,
    gated: set[str] | None,
    alpha: float,
    fail_if_worse: float | None,
) -> TaskComparison:
    (info_a, samples_a), (info_b, samples_b) = a, b
    scored_a = {s["sample_id"]: s["scores"] for s in samples_a if s["scores"] is not None}
    scored_b = {s["sample_id"]: s["scores"] for s in samples_b if s["scores"] is not None}
    shared_ids = [sid for sid in scored_a if sid in scored_b]
    outcomes_a = _outcomes(task_class, scored_a, shared_ids, info_a["info"].get("settings", {}))
    outcomes_b = _outcomes(task_class, scored_b, shared_ids, info_b["info"].get("settings", {}))
    stored_a = info_a["metrics"].get("metrics", {})
    stored_b = info_b["metrics"].get("metrics", {})
    headline = task_class.headline_metrics(info_b["info"].get("settings", {}))
    tested = [m for m in outcomes_a if m in outcomes_b]
    if gated is None:  # by default, the headline metrics that have a paired test
        gated = {m for m in headline if m in tested}
    rows = [
        _paired_metric(metric, outcomes_a[metric], outcomes_b[metric], alpha=alpha)
        for metric in tested
    ]
    for metric in sorted(stored_a):
        if metric in tested or metric not in stored_b:
            continue
        value_a, value_b = stored_a[metric], stored_b[metric]
        if _is_number(value_a) and _is_number(value_b):
            rows.append(MetricComparison(metric, value_a, value_b, value_b - value_a))
    # Headline metrics first, then tested ones in the task's order, then the rest.
    rows.sort(key=lambda r: (r.metric not in headline, r.test is None))
    for row in rows:
        row.gated = row.metric in gated
        worse_by = row.worse_by
        row.regression = bool(
            row.gated
            and fail_if_worse is not None
            and worse_by is not None
            and worse_by > fail_if_worse
            and row.significant is not False
        )
    sample_metric = next((m for m in headline if m in tested), tested[0] if tested else None)
    samples = (
        _sample_diffs(outcomes_a[sample_metric], outcomes_b[sample_metric]) if sample_metric else []
    )
    return TaskComparison(
        task=name,
        n_a=len(scored_a),
        n_b=len(scored_b),
        n_shared=len(shared_ids),
        sample_metric=sample_metric,
        metrics=rows,
        samples=samples,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _outcomes(
    task_class: type[Task],
    scored: Mapping[str, dict[str, Any]],
    sample_ids: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, dict[tuple[str, str], Outcome]]:
    """metric -> (sample id, unit) -> outcome, over the given samples."""
    found: dict[str, dict[tuple[str, str], Outcome]] = defaultdict(dict)
    for sample_id in sample_ids:
        for outcome in task_class.outcomes(scored[sample_id], settings):
            found[outcome.metric][(sample_id, outcome.unit)] = outcome
    return found


def _paired_metric(
    metric: str,
    a: Mapping[tuple[str, str], Outcome],
    b: Mapping[tuple[str, str], Outcome],
    *,
    alpha: float,
) -> MetricComparison:
    keys = [key for key in a if key in b]
    first = next(iter(b.values()))
    row = MetricComparison(metric, None, None, None, higher_is_better=first.higher_is_better)
    if not keys:
        return row
    values_a = np.array([a[k].value for k in keys], dtype=float)
    values_b = np.array([b[k].value for k in keys], dtype=float)
    differences = values_b - values_a
    kind = first.kind
    if kind == "binary" and not np.isin(np.concatenate([values_a, values_b]), (0.0, 1.0)).all():
        kind = "continuous"
    gains = differences > 0 if row.higher_is_better else differences < 0
    losses = differences < 0 if row.higher_is_better else differences > 0
    row.kind = kind
    row.n_pairs = len(keys)
    row.a, row.b = float(values_a.mean()), float(values_b.mean())
    row.delta = row.b - row.a
    row.better, row.worse = int(gains.sum()), int(losses.sum())
    row.same = row.n_pairs - row.better - row.worse
    by_sample: dict[str, list[float]] = defaultdict(list)
    for (sample_id, _), difference in zip(keys, differences, strict=True):
        by_sample[sample_id].append(difference)
    sums = np.array([sum(d) for d in by_sample.values()])
    counts = np.array([len(d) for d in by_sample.values()])
    row.n_samples = len(by_sample)
    if counts.max() > 1:
        # A sample's units are not independent (an MT-Bench question's turns share the
        # question and the model's take on it), so the test runs on one value per sample: the
        # mean difference over its units. Under "A and B are exchangeable" each sample's mean
        # difference is symmetric about 0 whatever the correlation within the sample, which is
        # what the signed-rank test needs; testing units as if independent is too liberal.
        # McNemar has no per-sample form for several 0/1 units, so binary outcomes take the
        # same test on their per-sample mean differences.
        row.test, row.p_value = "wilcoxon-clustered", wilcoxon_p(sums / counts)
    elif kind == "binary":
        row.test, row.p_value = "mcnemar", mcnemar_p(row.worse, row.better)
    else:
        row.test, row.p_value = "wilcoxon", wilcoxon_p(differences)
    row.significant = row.p_value < alpha
    if kind == "binary" and counts.max() == 1:
        # One 0/1 outcome per sample: a rate difference, which t would collapse to (0, 0)
        # when the two runs agree everywhere (see `paired.paired_rate_delta_ci`).
        low, high = paired_rate_delta_ci(values_a, values_b, confidence=1.0 - alpha)
        row.ci, row.ci_method = (float(low), float(high)), RATE_DELTA_CI_METHOD
        return row
    row.ci = delta_ci(sums, counts, confidence=1.0 - alpha)
    row.ci_method = DELTA_CI_METHOD if row.ci is not None else None
    return row


def _sample_diffs(
    a: Mapping[tuple[str, str], Outcome], b: Mapping[tuple[str, str], Outcome]
) -> list[dict[str, Any]]:
    """Units whose outcome changed, largest change first."""
    diffs = [
        {
            "sample_id": sample_id,
            "unit": unit,
            "a": a[(sample_id, unit)].value,
            "b": b[(sample_id, unit)].value,
            "delta": b[(sample_id, unit)].value - a[(sample_id, unit)].value,
        }
        for sample_id, unit in a
        if (sample_id, unit) in b and b[(sample_id, unit)].value != a[(sample_id, unit)].value
    ]
    return sorted(diffs, key=lambda d: -abs(d["delta"]))


def _provenance_warnings(
    run_a: Mapping[str, Any],
    run_b: Mapping[str, Any],
    tasks_a: Mapping[str, dict[str, Any]],
    tasks_b: Mapping[str, dict[str, Any]],
    shared: Sequence[str],
) -> list[str]:
    """What differs between the runs besides the model (judge, data, template, versions)."""
    warnings = []
    for name in shared:
        info_a, info_b = tasks_a[name]["info"], tasks_b[name]["info"]
        for key, meaning in _INFO_FIELDS.items():
            if info_a.get(key) != info_b.get(key):
                warnings.append(
                    f"{name}: {meaning} differs ({_short(info_a.get(key))} vs "
                    f"{_short(info_b.get(key))})"
                )
    prov_a, prov_b = run_a["provenance"], run_b["provenance"]
    if prov_a.get("chat_template_sha256") != prov_b.get("chat_template_sha256"):
        warnings.append(
            f"chat template differs ({_short(prov_a.get('chat_template_sha256'))} vs "
            f"{_short(prov_b.get('chat_template_sha256'))})"
        )
    if prov_a.get("seed") != prov_b.get("seed"):
        warnings.append(f"seed differs ({prov_a.get('seed')} vs {prov_b.get('seed')})")
    packages_a, packages_b = prov_a.get("packages", {}), prov_b.get("packages", {})
    changed = [
        f"{name} {packages_a.get(name)} vs {packages_b.get(name)}"
        for name in sorted(set(packages_a) | set(packages_b))
        if packages_a.get(name) != packages_b.get(name)
    ]
    if changed:
        warnings.append("package versions differ: " + ", ".join(changed))
    return warnings


def _short(value: Any) -> str:
    """Hashes to 12 characters, mappings to compact JSON, for one-line warnings."""
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
