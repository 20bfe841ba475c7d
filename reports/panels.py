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
from evalharness.reports.collect import RunInfo, TaskResult, headline_union

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


MetricPicker = Callable[[TaskContext], list[str]]


def listed(*names: str) -> MetricPicker:
    """These metrics, in this order, where any run has them."""
    return lambda ctx: ctx.present_metrics(names)


def where(keep: Callable[[str], bool]) -> MetricPicker:
    """Every metric whose name `keep` accepts, sorted (e.g. per-category rates)."""
    return lambda ctx: ctx.metrics_where(keep)


@dataclass(frozen=True)
class Bars:
    """One bar chart of a task page: its title, which metrics it shows and how it is labelled.

    A task's charts are a list of these, so adding a chart (or a task) is a line of data.
    """

    title: str
    metrics: MetricPicker
    caption: str = ""
    y_label: str = ""
    domain: tuple[float, float] | None = None

    def panels(self, ctx: TaskContext) -> list[Panel]:
        """The chart as a panel, or nothing when no run has any of its metrics."""
        metrics = self.metrics(ctx)
        if not metrics:
            return []
        svg = bar_chart(
            metrics, ctx.series(metrics), title=self.title, y_label=self.y_label, domain=self.domain
        )
        return [Panel(self.title, trusted_svg(svg), self.caption)]


#: The bar charts of the tasks whose metrics have a known meaning.
TASK_BARS: Mapping[str, Sequence[Bars]] = {
    "mt_bench": (
        Bars(
            "MT-Bench score per category",
            where(lambda m: not m.startswith("score")),
            caption="Mean judge rating per category (1-10) with 95% bootstrap CIs.",
            y_label="rating",
        ),
        Bars(
            "MT-Bench overall and per turn",
            listed("score", "score_turn1", "score_turn2"),
            y_label="rating",
        ),
    ),
    "alpaca_eval": (
        Bars(
            "Win rates against the reference",
            listed(
                "win_rate",
                "length_controlled_winrate",
                "length_controlled_minimal_winrate",  # without AlpacaEval's calibration file
                "discrete_win_rate",
            ),
            caption="Win rates in percent; whiskers are the stored 95% bootstrap CIs, where kept.",
            y_label="%",
            domain=PERCENT,
        ),
        Bars(
            "Win rate per dataset",
            where(lambda m: m.startswith("win_rate_")),
            y_label="%",
            domain=PERCENT,
        ),
    ),
    "driftcaps": (
        Bars(
            "Safety rates",
            listed("unsafe_refusal_rate", "safe_compliance_rate", "balanced_safety_accuracy"),
            caption="Refusal on unsafe prompts and compliance on safe ones, with 95% CIs.",
            y_label="rate",
            domain=RATE,
        ),
        Bars(
            "Rates per category",
            where(lambda m: m.startswith(("refusal_", "compliance_"))),
            y_label="rate",
            domain=RATE,
        ),
    ),
    "truematch": (
        Bars(
            "Retrieval accuracy (R@1) by bag size",
            where(lambda m: m.startswith("r_at_1")),
            domain=RATE,
        ),
        Bars(
            "R@1 against chance, a generic and an oracle description",
            listed("r_at_1", "chance", "generic_r_at_1", "oracle_r_at_1"),
            domain=RATE,
        ),
    ),
}


def liconbench_panels(ctx: TaskContext) -> list[Panel]:
    """One line per run over the rounds (or token budgets) it measured."""
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


def generic_panels(ctx: TaskContext) -> list[Panel]:
    """Any other task: its declared headline metrics, as one bar chart."""
    headline = headline_union(result for _, _, result in ctx.entries)
    chart = Bars("Headline metrics", listed(*headline), caption="With 95% CIs where stored.")
    return chart.panels(ctx)


def _bar_panels(bars: Sequence[Bars]) -> Callable[[TaskContext], list[Panel]]:
    return lambda ctx: [panel for chart in bars for panel in chart.panels(ctx)]


PANELS: Mapping[str, Callable[[TaskContext], list[Panel]]] = {
    **{task: _bar_panels(bars) for task, bars in TASK_BARS.items()},
    "liconbench": liconbench_panels,
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
