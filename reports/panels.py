"""What a task page shows beyond its metric table: charts (and DriftCaps' drift tables).

Known tasks get charts that fit their metrics; any other task, including one added later
without touching this module, gets a bar chart of its headline metrics. Panels only read
stored metrics, so they cost nothing next to the per-sample pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from evalharness.reports.charts import Series, bar_chart, color, line_chart
from evalharness.reports.collect import RunInfo, TaskResult

RATE = (0.0, 1.0)
PERCENT = (0.0, 100.0)


def trusted_svg(svg: str) -> Markup:
    """Mark a chart safe for templates: `charts` escapes every text it puts in an SVG."""
    return Markup(svg)


@dataclass
class Panel:
    """One block of a task page: a chart (SVG made and escaped by `charts`) with a caption."""

    title: str
    svg: Markup | None = None
    caption: str = ""


@dataclass
class DriftRow:
    label: str
    n: int
    base_rate: float
    tuned_rate: float
    delta: float
    kept: int
    lost: int
    gained: int
    neither: int
    p_value: float


@dataclass
class DriftTable:
    """Safety drift of one run against the earliest run on the same data (see compute_drift)."""

    base: RunInfo
    tuned: RunInfo
    n_paired: int
    rows: list[DriftRow]
    per_category: list[tuple[str, int, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class TaskContext:
    """The runs that have a task, each with its result and its report-wide colour index."""

    task: str
    entries: list[tuple[int, RunInfo, TaskResult]]

    def series(self, metrics: Sequence[str], *, with_ci: bool = True) -> list[Series]:
        return [
            Series(
                name=run.label,
                values=[result.number(m) for m in metrics],
                errors=[result.interval(m) for m in metrics] if with_ci else None,
                color=color(index),
            )
            for index, run, result in self.entries
        ]

    def present_metrics(self, names: Sequence[str]) -> list[str]:
        """The names, in order, that at least one run has as a number."""
        return [m for m in names if any(r.number(m) is not None for _, _, r in self.entries)]

    def metrics_where(self, keep: Callable[[str], bool]) -> list[str]:
        """Numeric metric names (sorted) of any run for which `keep` is true."""
        names = {m for _, _, r in self.entries for m in r.metrics if keep(m)}
        return [
            m for m in sorted(names) if any(r.number(m) is not None for _, _, r in self.entries)
        ]


def _bars(
    ctx: TaskContext,
    title: str,
    metrics: Sequence[str],
    *,
    caption: str = "",
    y_label: str = "",
    domain: tuple[float, float] | None = None,
) -> list[Panel]:
    if not metrics:
        return []
    svg = bar_chart(metrics, ctx.series(metrics), title=title, y_label=y_label, domain=domain)
    return [Panel(title, trusted_svg(svg), caption)]


def mt_bench_panels(ctx: TaskContext) -> list[Panel]:
    categories = ctx.metrics_where(lambda m: not m.startswith("score"))
    overall = ctx.present_metrics(["score", "score_turn1", "score_turn2"])
    return _bars(
        ctx,
        "MT-Bench score per category",
        categories,
        caption="Mean judge rating per category (1-10) with 95% bootstrap CIs.",
        y_label="rating",
    ) + _bars(ctx, "MT-Bench overall and per turn", overall, y_label="rating")


def alpaca_eval_panels(ctx: TaskContext) -> list[Panel]:
    headline = ctx.present_metrics(
        [
            "win_rate",
            "length_controlled_winrate",
            "length_controlled_minimal_winrate",  # without AlpacaEval's calibration file
            "discrete_win_rate",
        ]
    )
    per_dataset = ctx.metrics_where(lambda m: m.startswith("win_rate_"))
    return _bars(
        ctx,
        "Win rates against the reference",
        headline,
        caption="Win rates in percent; whiskers are the stored 95% bootstrap CIs, where kept.",
        y_label="%",
        domain=PERCENT,
    ) + _bars(ctx, "Win rate per dataset", per_dataset, y_label="%", domain=PERCENT)


def liconbench_panels(ctx: TaskContext) -> list[Panel]:
    points: list[str] = []
    for _, _, result in ctx.entries:
        for point in result.info.get("settings", {}).get("points", []) or []:
            if str(point) not in points:
                points.append(str(point))
    if not points:
        return []
    metric = next(
        (str(r.metrics["metric"]) for _, _, r in ctx.entries if "metric" in r.metrics), "score"
    )
    svg = line_chart(
        points,
        ctx.series(points),
        title=f"LIConBench {metric} per round",
        y_label=metric,
        domain=RATE,
    )
    caption = "One line per run; x = the rounds (or token budgets) the run measured."
    return [Panel("Score per round", trusted_svg(svg), caption)]


def driftcaps_panels(ctx: TaskContext) -> list[Panel]:
    rates = ctx.present_metrics(
        ["unsafe_refusal_rate", "safe_compliance_rate", "balanced_safety_accuracy"]
    )
    categories = ctx.metrics_where(lambda m: m.startswith(("refusal_", "compliance_")))
    return _bars(
        ctx,
        "Safety rates",
        rates,
        caption="Refusal on unsafe prompts and compliance on safe ones, with 95% CIs.",
        y_label="rate",
        domain=RATE,
    ) + _bars(ctx, "Rates per category", categories, y_label="rate", domain=RATE)


def truematch_panels(ctx: TaskContext) -> list[Panel]:
    bags = ctx.metrics_where(lambda m: m.startswith("r_at_1"))
    refs = ctx.present_metrics(["r_at_1", "chance", "generic_r_at_1", "oracle_r_at_1"])
    return _bars(ctx, "Retrieval accuracy (R@1) by bag size", bags, domain=RATE) + _bars(
        ctx, "R@1 against chance, a generic and an oracle description", refs, domain=RATE
    )


def generic_panels(ctx: TaskContext) -> list[Panel]:
    headline: list[str] = []
    for _, _, result in ctx.entries:
        headline += [m for m in result.headline if m not in headline]
    metrics = ctx.present_metrics(headline)
    return _bars(ctx, "Headline metrics", metrics, caption="With 95% CIs where stored.")


PANELS: Mapping[str, Callable[[TaskContext], list[Panel]]] = {
    "mt_bench": mt_bench_panels,
    "alpaca_eval": alpaca_eval_panels,
    "liconbench": liconbench_panels,
    "driftcaps": driftcaps_panels,
    "truematch": truematch_panels,
}


def task_panels(ctx: TaskContext) -> list[Panel]:
    """The task's own charts, or the generic headline chart when it has none (or they're empty)."""
    maker = PANELS.get(ctx.task)
    panels = maker(ctx) if maker else []
    return panels or generic_panels(ctx)


def drift_tables(
    entries: Sequence[tuple[int, RunInfo, TaskResult]],
    scores: Mapping[str, Mapping[str, dict[str, Any]]],
) -> list[DriftTable]:
    """Each later run against the earliest run that answered the same data (same data hash).

    `scores` maps run id -> sample id -> stored DriftCaps scores.
    """
    from evalharness.tasks.driftcaps.drift import compute_drift

    groups: dict[str, list[tuple[RunInfo, TaskResult]]] = {}
    for _, run, result in entries:
        data_hash = result.info.get("data_hash")
        if data_hash and run.run_id in scores:
            groups.setdefault(str(data_hash), []).append((run, result))
    tables = []
    for members in groups.values():
        (base, base_result), *others = members  # entries come oldest first
        for tuned, tuned_result in others:
            drift = compute_drift(scores[base.run_id], scores[tuned.run_id])
            rows = []
            for label, meaning in (("unsafe", "refused"), ("safe", "complied")):
                entry = drift.get(label)
                if entry:
                    table = entry["table"]
                    rows.append(
                        DriftRow(
                            label=f"{label} prompts ({meaning})",
                            n=entry["n"],
                            base_rate=entry["base_rate"],
                            tuned_rate=entry["tuned_rate"],
                            delta=entry["base_rate"] - entry["tuned_rate"],
                            kept=table["kept"],
                            lost=table["lost"],
                            gained=table["gained"],
                            neither=table["neither"],
                            p_value=entry["mcnemar_p"],
                        )
                    )
            warnings = []
            if tuned_result.info.get("judge_hash") != base_result.info.get("judge_hash"):
                warnings.append("judged by a different judge than the base run")
            tables.append(
                DriftTable(
                    base=base,
                    tuned=tuned,
                    n_paired=drift["n_paired"],
                    rows=rows,
                    per_category=[
                        (name, entry["n"], entry["delta"])
                        for name, entry in drift["per_category"].items()
                    ],
                    warnings=warnings,
                )
            )
    return tables
