"""Small inline-SVG charts for the HTML report, drawn in Python.

Why SVG strings from Python: the report must open from file:// with no network and no chart
library, and a chart that is part of the HTML shows up in a saved page, a screenshot and a
printout alike. Every piece of text that goes into an SVG passes through `esc`, so the
callers may mark the result safe (`markupsafe.Markup`) and embed it in a template as is.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), then extras.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#8C6D31",
    "#4D4D4D",
    "#7B61FF",
    "#B8860B",
)
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
#: Rough width of one character of 11px text; enough to lay out labels and legends.
CHAR_W = 6.4
#: Height of every chart's plot area (the axes' box), in SVG units.
PLOT_H = 200.0
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def esc(text: object) -> str:
    """Text safe in SVG/XML text and attribute values (quotes too; invalid XML chars dropped)."""
    return html.escape(_XML_INVALID.sub("", str(text)), quote=True)


def color(index: int) -> str:
    """The colour of series `index`; runs keep their colour across every chart of a report."""
    return PALETTE[index % len(PALETTE)]


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, with an ellipsis when cut (before escaping, never after)."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def fmt(value: float | None) -> str:
    """A number as charts and tables print it: 3 decimals for small values, fewer for large."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass(frozen=True)
class Series:
    """One named line or set of bars; `errors` holds a (low, high) interval per value, or None."""

    name: str
    values: Sequence[float | None]
    errors: Sequence[tuple[float, float] | None] | None = None
    color: str | None = None

    def value_at(self, index: int) -> float | None:
        """The value at `index`; None past the end (a series may be shorter than the axis)."""
        return self.values[index] if index < len(self.values) else None

    def error_at(self, index: int) -> tuple[float, float] | None:
        """The interval at `index`; None where there is none."""
        if self.errors is None or index >= len(self.errors):
            return None
        return self.errors[index]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step + 1e-9) * step
    ticks = []
    value = start
    while value < high + step * 0.5 and len(ticks) < 50:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _domain(series: Sequence[Series], fixed: tuple[float, float] | None) -> list[float]:
    """Axis ticks spanning every value and interval (and zero), or `fixed` when given."""
    found = [0.0]
    for s in series:
        found += [v for v in s.values if v is not None and math.isfinite(v)]
        for interval in s.errors or ():
            if interval is not None:
                found += [x for x in interval if x is not None and math.isfinite(x)]
    low, high = min(found), max(found)
    if fixed is not None:
        low, high = min(low, fixed[0]), max(high, fixed[1])
    return nice_ticks(low, high)


def _text_width(text: str, size: float = 11.0) -> float:
    return len(text) * CHAR_W * size / 11.0


def _legend(
    series: Sequence[Series], x0: float, y0: float, width: float
) -> tuple[list[str], float]:
    """Legend items wrapped into rows within `width`; returns the SVG parts and its height."""
    parts: list[str] = []
    x, y = x0, y0
    for i, s in enumerate(series):
        label = shorten(s.name, 48)
        item_w = 16 + _text_width(label) + 18
        if x > x0 and x + item_w > x0 + width:
            x, y = x0, y + 18
        fill = s.color or color(i)
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="11" height="11" rx="2" fill="{fill}"/>'
            f'<text x="{x + 16:.1f}" y="{y:.1f}" class="eh-legend">{esc(label)}</text>'
        )
        x += item_w
    return parts, (y - y0 + 18) if series else 0.0


def _frame(
    title: str,
    width: float,
    height: float,
    body: list[str],
    description: str,
) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="eh-chart" role="img" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'font-family="{esc(FONT)}" font-size="11">'
        f"<title>{esc(title)}</title><desc>{esc(description)}</desc>"
        "<style>.eh-legend,.eh-tick{fill:#444}.eh-axis{stroke:#999}.eh-grid{stroke:#e6e6e6}"
        ".eh-title{font-size:13px;font-weight:600;fill:#222}.eh-empty{fill:#888}</style>"
        + "".join(body)
        + "</svg>"
    )


def _y_axis(
    ticks: Sequence[float], left: float, right: float, to_y: object, y_label: str, top: float
) -> list[str]:
    parts = []
    for tick in ticks:
        y = to_y(tick)  # type: ignore[operator]
        parts.append(
            f'<line class="eh-grid" x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="eh-tick" x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">'
            f"{esc(_tick_label(tick, ticks))}</text>"
        )
    if y_label:
        mid = (top + to_y(ticks[0])) / 2  # type: ignore[operator]
        parts.append(
            f'<text class="eh-tick" transform="translate(12,{mid:.1f}) rotate(-90)" '
            f'text-anchor="middle">{esc(shorten(y_label, 40))}</text>'
        )
    return parts


def _tick_label(tick: float, ticks: Sequence[float]) -> str:
    """The tick with the fewest decimals that still print every tick of the axis exactly."""
    decimals = next((d for d in range(5) if all(abs(round(t, d) - t) < 1e-9 for t in ticks)), 4)
    return f"{tick:.{decimals}f}"


def _error_bar(x: float, y_low: float, y_high: float, cap: float) -> str:
    return (
        f'<path d="M{x:.1f},{y_low:.1f}V{y_high:.1f}M{x - cap:.1f},{y_low:.1f}H{x + cap:.1f}'
        f'M{x - cap:.1f},{y_high:.1f}H{x + cap:.1f}" stroke="#222" stroke-width="1.2" '
        'fill="none"/>'
    )


def _tooltip(series: str, label: str, value: float | None, interval: object) -> str:
    text = f"{series} · {label}: {fmt(value)}"
    if isinstance(interval, (tuple, list)) and len(interval) == 2:
        text += f" (95% CI {fmt(interval[0])} – {fmt(interval[1])})"
    return f"<title>{esc(text)}</title>"


@dataclass(frozen=True)
class _Plot:
    """Where a chart's plot area is and how it maps a value to a y position."""

    left: float
    top: float
    width: float
    height: float
    low: float
    high: float

    def y(self, value: float) -> float:
        return self.top + self.height - (value - self.low) / (self.high - self.low) * self.height


def _plot(
    series: Sequence[Series],
    *,
    title: str,
    y_label: str,
    domain: tuple[float, float] | None,
    left: float,
    plot_w: float,
    empty: bool,
) -> tuple[_Plot, list[str]]:
    """What every chart starts with: the plot area below the title and the wrapped legend,
    and the SVG of the title, legend, y axis and (when `empty`) a "no data" note."""
    legend, legend_h = _legend(series, left, 42.0, plot_w)
    top = 30.0 + legend_h + 8.0
    ticks = _domain(series, domain)
    plot = _Plot(left, top, plot_w, PLOT_H, ticks[0], ticks[-1])
    body = [f'<text class="eh-title" x="{left:.1f}" y="18">{esc(shorten(title, 90))}</text>']
    body += legend
    body += _y_axis(ticks, left, left + plot_w, plot.y, y_label, top)
    if empty:
        body.append(f'<text class="eh-empty" x="{left + 10:.1f}" y="{top + 20:.1f}">no data</text>')
    return plot, body


def bar_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_label: str = "",
    domain: tuple[float, float] | None = None,
) -> str:
    """Grouped bars: one group per category, one bar per series, CI whiskers where known.

    The plot widens with the number of bars so that many runs stay readable (the page
    scrolls sideways rather than squeezing bars to slivers).
    """
    n_groups, n_series = len(categories), max(1, len(series))
    bar_w = 18.0 if n_series * n_groups <= 40 else 10.0
    group_w = n_series * bar_w + 22.0
    label_len = max((len(c) for c in categories), default=0)
    rotate = label_len * CHAR_W > group_w - 4
    left, plot_w = 56.0, max(480.0, n_groups * group_w)
    empty = not categories or not series
    plot, body = _plot(
        series, title=title, y_label=y_label, domain=domain, left=left, plot_w=plot_w, empty=empty
    )
    bottom_h = (min(label_len, 28) * CHAR_W * 0.72 + 18.0) if rotate else 26.0
    zero = plot.y(max(plot.low, min(0.0, plot.high)))
    for g, category in enumerate(categories):
        gx = left + g * group_w + 11.0
        for i, s in enumerate(series):
            value, interval = s.value_at(g), s.error_at(g)
            x = gx + i * bar_w
            tip = _tooltip(s.name, category, value, interval)
            if value is None or not math.isfinite(value):
                body.append(
                    f'<text class="eh-empty" x="{x + bar_w / 2:.1f}" y="{zero - 3:.1f}" '
                    f'text-anchor="middle">–{tip}</text>'
                )
                continue
            y = plot.y(value)
            y0, y1 = min(y, zero), max(y, zero)
            body.append(
                f'<rect x="{x + 1:.1f}" y="{y0:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{max(y1 - y0, 0.5):.1f}" fill="{s.color or color(i)}">{tip}</rect>'
            )
            if interval is not None:
                body.append(
                    _error_bar(x + bar_w / 2, plot.y(interval[0]), plot.y(interval[1]), bar_w / 4)
                )
        cx = gx + n_series * bar_w / 2
        label_y = plot.top + PLOT_H + 15
        label = esc(shorten(category, 28))
        if rotate:
            body.append(
                f'<text class="eh-tick" transform="translate({cx:.1f},{label_y:.1f}) '
                f'rotate(-35)" text-anchor="end">{label}</text>'
            )
        else:
            body.append(
                f'<text class="eh-tick" x="{cx:.1f}" y="{label_y:.1f}" text-anchor="middle">'
                f"{label}</text>"
            )
    body.append(
        f'<line class="eh-axis" x1="{left:.1f}" x2="{left + plot_w:.1f}" y1="{zero:.1f}" '
        f'y2="{zero:.1f}"/>'
    )
    description = f"bar chart of {', '.join(categories)} for {len(series)} series"
    width, height = left + plot_w + 16.0, plot.top + PLOT_H + bottom_h
    return _frame(title, width, height, body, shorten(description, 300))


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_label: str = "",
    domain: tuple[float, float] | None = None,
) -> str:
    """One line per series over evenly spaced x points; gaps where a value is missing."""
    left, plot_w = 56.0, max(480.0, 90.0 * max(1, len(x_labels) - 1))
    empty = not x_labels or not series
    plot, body = _plot(
        series, title=title, y_label=y_label, domain=domain, left=left, plot_w=plot_w, empty=empty
    )

    def to_x(index: int) -> float:
        if len(x_labels) <= 1:
            return left + plot_w / 2
        return left + 16 + index * (plot_w - 32) / (len(x_labels) - 1)

    bottom = plot.top + PLOT_H
    for k, label in enumerate(x_labels):
        body.append(
            f'<text class="eh-tick" x="{to_x(k):.1f}" y="{bottom + 16:.1f}" '
            f'text-anchor="middle">{esc(shorten(label, 18))}</text>'
        )
    for i, s in enumerate(series):
        stroke = s.color or color(i)
        # Nudge each series sideways a little so that overlapping whiskers stay readable.
        nudge = (i - (len(series) - 1) / 2) * min(4.0, 24.0 / max(1, len(series)))
        runs: list[list[str]] = [[]]
        for k in range(len(x_labels)):
            value = s.value_at(k)
            if value is None or not math.isfinite(value):
                runs.append([])
                continue
            runs[-1].append(f"{to_x(k) + nudge:.1f},{plot.y(value):.1f}")
        for points in runs:
            if len(points) > 1:
                body.append(
                    f'<polyline points="{" ".join(points)}" fill="none" stroke="{stroke}" '
                    'stroke-width="2"/>'
                )
        for k, label in enumerate(x_labels):
            value, interval = s.value_at(k), s.error_at(k)
            if value is None or not math.isfinite(value):
                continue
            x = to_x(k) + nudge
            if interval is not None:
                body.append(_error_bar(x, plot.y(interval[0]), plot.y(interval[1]), 4))
            body.append(
                f'<circle cx="{x:.1f}" cy="{plot.y(value):.1f}" r="3.5" fill="{stroke}">'
                f"{_tooltip(s.name, label, value, interval)}</circle>"
            )
    body.append(
        f'<line class="eh-axis" x1="{left:.1f}" x2="{left + plot_w:.1f}" '
        f'y1="{bottom:.1f}" y2="{bottom:.1f}"/>'
    )
    description = f"line chart over {', '.join(x_labels)} for {len(series)} series"
    width, height = left + plot_w + 24.0, bottom + 30.0
    return _frame(title, width, height, body, shorten(description, 300))
