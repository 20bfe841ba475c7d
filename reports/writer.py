"""The state one report build shares between its pages, and the one way pages get written.

Every kind of page (leaderboard, task, run, samples, compare) renders through `SiteWriter.page`
and every data chunk through `SiteWriter.chunk`, so the build counts all it writes in one
`BuildStats`. The writer also carries what one step learns for the next: the samples step
counts samples and keeps DriftCaps' scores, which the task and run pages then show.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from evalharness import __version__
from evalharness.reports import charts
from evalharness.reports.collect import RunInfo, as_number, task_class
from evalharness.reports.data import js_json, write_chunk
from evalharness.reports.data import write_text as write_file
from evalharness.reports.names import Names
from evalharness.tasks.base import Task


@dataclass
class BuildStats:
    """What a build wrote, for `--json` and the benchmark."""

    out: Path
    pages: int = 0
    runs: int = 0
    samples: int = 0
    files: int = 0
    bytes: int = 0
    comparisons: int = 0
    seconds: float = 0.0
    #: Seconds per build step (loading runs, samples, task pages, run pages, compare, index).
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size


def pretty(value: Any) -> str:
    """Indented JSON for provenance panels (rendered as escaped text)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def number_text(value: Any) -> Any:
    """Integers as integers (counts, token budgets), floats as `charts.fmt`, text as is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    number = as_number(value)
    return value if number is None else charts.fmt(number)


def environment() -> Environment:
    """Jinja with autoescaping always on; only our own escaped SVG and JSON are marked safe."""
    env = Environment(
        loader=PackageLoader("evalharness.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = number_text
    env.filters["pretty"] = pretty
    env.filters["js"] = lambda v: Markup(js_json(v))  # escaped for <script> by js_json
    env.filters["color"] = charts.color
    return env


class SiteWriter:
    """Renders pages and chunks into a staging root, counting what it writes."""

    def __init__(self, root: Path, runs: Sequence[RunInfo], store_name: str) -> None:
        self.root = root
        self.runs = list(runs)
        self.env = environment()
        self.stats = BuildStats(out=root)
        self.tasks = sorted({task for run in runs for task in run.tasks})
        self.site = {
            "generated": datetime.now(tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": __version__,
            "store": store_name,
            "n_runs": len(runs),
            "tasks": [{"name": t, "file": Names.task_page(t)} for t in self.tasks],
        }
        #: Each run's colour index, the same in every chart of the report.
        self.colors = {run.run_id: i for i, run in enumerate(self.runs)}
        #: Filled by the samples step: samples and fallback readings per (run id, task).
        self.sample_counts: dict[tuple[str, str], int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}
        #: Filled by the samples step: task -> run id -> sample id -> stored scores.
        self.kept_scores: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def page(self, name: str, template: str, **context: Any) -> None:
        html = self.env.get_template(template).render(site=self.site, names=Names, **context)
        self.stats.add(write_file(self.root / name, html))
        self.stats.pages += 1

    def chunk(self, name: str, key: str, payload: Any) -> None:
        self.stats.add(write_chunk(self.root / name, key, payload))

    def class_of(self, task: str, run: RunInfo | None = None) -> type[Task] | None:
        """The class that reads `task` as stored (by `run`, else by any run that has it): a
        task.yaml folder's runs name their folder in the stored settings, not a registry name."""
        for candidate in [run] if run is not None else self.runs:
            if task in candidate.tasks:
                found = task_class(task, candidate.tasks[task].info.get("settings"))
                if found is not None:
                    return found
        return None

    def describe(self, task: str) -> dict[str, Any]:
        """The task's description and whether any registered class still reads it."""
        cls = self.class_of(task)
        return {"description": cls.description if cls else "", "known": cls is not None}
