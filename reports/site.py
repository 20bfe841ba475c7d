"""Write the static report site: pages from templates, data chunks, copied static files.

The site is built in a staging directory next to `--out` and swapped into place at the end,
so a reader never sees half a report and a failed build leaves the previous one intact. A
directory is only ever replaced if it holds a report (the marker file says so).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from evalharness import __version__
from evalharness.errors import InputError
from evalharness.reports import charts
from evalharness.reports.collect import (
    RunInfo,
    TaskResult,
    as_number,
    format_time,
    load_runs,
    sample_records,
    task_class,
)
from evalharness.reports.comparisons import CompareFn, compare_pair, default_compare, plan_pairs
from evalharness.reports.data import PAGE_SIZE, detail, js_json, sample_index, write_chunk
from evalharness.reports.data import write_text as write_file
from evalharness.reports.panels import TaskContext, drift_tables, task_panels
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import Task

#: A file in every report directory; only a directory holding it is ever replaced.
MARKER = ".evalharness-report"
#: Tasks whose per-sample scores the task page needs (DriftCaps' drift tables).
KEEP_SCORES = {"driftcaps"}
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")


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


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of a run id or task name.

    Names that are already safe stay as they are (readable URLs); others get a hash suffix so
    two names that clean up to the same text never share a file.
    """
    clean = _UNSAFE_NAME.sub("_", name)[:60].strip("_")
    if clean == name and clean:
        return clean
    return f"{clean or 'x'}-{hashlib.sha1(name.encode('utf-8', 'replace')).hexdigest()[:8]}"


@dataclass
class Names:
    """Where every page and data chunk of the site lives (all relative to the site root)."""

    @staticmethod
    def run_page(run_id: str) -> str:
        return f"run-{slug(run_id)}.html"

    @staticmethod
    def task_page(task: str) -> str:
        return f"task-{slug(task)}.html"

    @staticmethod
    def samples_page(run_id: str, task: str) -> str:
        return f"samples-{slug(run_id)}-{slug(task)}.html"

    @staticmethod
    def sample_key(run_id: str, task: str) -> str:
        return f"{slug(run_id)}/{slug(task)}"

    @staticmethod
    def sample_dir(run_id: str, task: str) -> str:
        return f"data/samples/{slug(run_id)}/{slug(task)}/"

    @staticmethod
    def compare_file(run_a: str, run_b: str) -> str:
        return f"data/compare/{slug(run_a)}__{slug(run_b)}.js"


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


def _prepare(out: Path) -> Path:
    """A fresh staging directory beside `out`, after checking `out` may be (re)written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise InputError(
            f"--out {out} is a non-empty directory without a report in it; "
            "give a new or empty directory (or an earlier report's)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished site into place; the old one is removed only after the swap."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def _copy_static(root: Path, stats: BuildStats) -> None:
    static = files("evalharness.reports").joinpath("static")
    (root / "static").mkdir()
    for entry in static.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            data = entry.read_bytes()
            (root / "static" / entry.name).write_bytes(data)
            stats.add(len(data))


def _task_order(runs: Sequence[RunInfo]) -> list[str]:
    return sorted({task for run in runs for task in run.tasks})


def _headline_columns(runs: Sequence[RunInfo], task: str) -> list[str]:
    columns: list[str] = []
    for run in runs:
        result = run.tasks.get(task)
        if result is not None:
            columns += [m for m in result.headline if m not in columns]
    return columns


def _metric_rows(entries: Sequence[tuple[int, RunInfo, TaskResult]]) -> list[dict[str, Any]]:
    """Rows of the task page's metric table: headline metrics first, then the rest by name."""
    headline: list[str] = []
    for _, _, result in entries:
        headline += [m for m in result.headline if m not in headline]
    others = sorted({m for _, _, r in entries for m in r.metrics} - set(headline))
    rows = []
    for metric in [*headline, *others]:
        cells = []
        for _, _, result in entries:
            value = result.metrics.get(metric)
            cells.append(
                {
                    "value": value,
                    "ci": result.interval(metric),
                    "method": result.interval_method(metric),
                }
            )
        if all(c["value"] is None for c in cells):
            continue
        rows.append({"metric": metric, "headline": metric in headline, "cells": cells})
    return rows


def _ci_methods(entries: Sequence[tuple[int, RunInfo, TaskResult]]) -> list[str]:
    """The interval methods the task page's metrics use, each "name: description"."""
    found = {
        text
        for _, _, result in entries
        for metric in result.ci
        if (text := result.interval_method(metric)) is not None
    }
    return sorted(found)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested identity dicts as (dotted key, text) rows for a key/value table."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key in sorted(value):
            rows += _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list):
        return [(prefix, json.dumps(value, ensure_ascii=False, default=str))]
    return [(prefix, "–" if value is None else str(value))]


class SiteWriter:
    """Renders pages and chunks into a staging root, counting what it writes."""

    def __init__(self, root: Path, runs: Sequence[RunInfo], store_name: str) -> None:
        self.root = root
        self.runs = list(runs)
        self.env = environment()
        self.stats = BuildStats(out=root)
        self.tasks = _task_order(runs)
        self.site = {
            "generated": datetime.now(tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": __version__,
            "store": store_name,
            "n_runs": len(runs),
            "tasks": [{"name": t, "file": Names.task_page(t)} for t in self.tasks],
        }
        self.colors = {run.run_id: i for i, run in enumerate(self.runs)}
        self.sample_counts: dict[tuple[str, str], int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}
        self.kept_scores: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def page(self, name: str, template: str, **context: Any) -> None:
        html = self.env.get_template(template).render(site=self.site, names=Names, **context)
        self.stats.add(write_file(self.root / name, html))
        self.stats.pages += 1

    def chunk(self, name: str, key: str, payload: Any) -> None:
        self.stats.add(write_chunk(self.root / name, key, payload))

    # -- per-sample data ----------------------------------------------------------------
    def samples(self, store: RunStore) -> None:
        """Index, search text and detail chunks per run and task, then its samples page."""
        for run in self.runs:
            for task in run.tasks:
                records = list(sample_records(store, run.run_id, task))
                base = Names.sample_dir(run.run_id, task)
                key = Names.sample_key(run.run_id, task)
                index, search = sample_index(records)
                self.chunk(base + "index.js", f"index:{key}", index)
                self.chunk(base + "search.js", f"search:{key}", search)
                for start in range(0, len(records), PAGE_SIZE):
                    number = start // PAGE_SIZE
                    page = [detail(r) for r in records[start : start + PAGE_SIZE]]
                    self.chunk(f"{base}p{number:05d}.js", f"page:{key}:{number}", page)
                if task in KEEP_SCORES:
                    self.kept_scores.setdefault(task, {})[run.run_id] = {
                        r.sample_id: r.scores or {} for r in records
                    }
                self.sample_counts[(run.run_id, task)] = len(records)
                self.fallbacks[(run.run_id, task)] = index["fallbacks"]
                self.stats.samples += len(records)
                self._samples_page(run, task, len(records), base, key)

    def _samples_page(self, run: RunInfo, task: str, n: int, base: str, key: str) -> None:
        others = [
            {"label": r.label, "file": Names.samples_page(r.run_id, task), "current": r is run}
            for r in self.runs
            if task in r.tasks
        ]
        config = {"key": key, "base": base, "n": n, "run": run.run_id, "task": task}
        self.page(
            Names.samples_page(run.run_id, task),
            "samples.jinja",
            page="samples",
            title=f"{task} samples · {run.label}",
            run=run,
            task=task,
            n=n,
            fallbacks=self.fallbacks[(run.run_id, task)],
            known=self.class_of(task, run) is not None,
            others=others,
            config=config,
        )

    def class_of(self, task: str, run: Any = None) -> type[Task] | None:
        """The class that reads `task` as stored (by `run`, else by any run that has it): a
        task.yaml folder's runs name their folder in the stored settings, not a registry name."""
        for candidate in [run] if run is not None else self.runs:
            if task in candidate.tasks:
                found = task_class(task, candidate.tasks[task].info.get("settings"))
                if found is not None:
                    return found
        return None

    # -- pages ----------------------------------------------------------------------------
    def index(self) -> None:
        columns = [
            {"task": t, "file": Names.task_page(t), "metrics": _headline_columns(self.runs, t)}
            for t in self.tasks
        ]
        rows = []
        for run in sorted(self.runs, key=lambda r: r.created_at, reverse=True):
            cells = []
            for column in columns:
                result = run.tasks.get(column["task"])
                for metric in column["metrics"]:
                    value = result.number(metric) if result else None
                    cells.append(
                        {
                            "value": value,
                            "ci": result.interval(metric) if result else None,
                            "method": result.interval_method(metric) if result else None,
                        }
                    )
            rows.append({"run": run, "cells": cells})
        cards = []
        for task in self.tasks:
            cls = self.class_of(task)
            cards.append(
                {
                    "task": task,
                    "file": Names.task_page(task),
                    "description": cls.description if cls else "",
                    "known": cls is not None,
                    "runs": sum(task in r.tasks for r in self.runs),
                }
            )
        self.page(
            "index.html", "index.jinja", page="index", title="Leaderboard", columns=columns,
            rows=rows, cards=cards,
        )  # fmt: skip

    def task_pages(self) -> None:
        for task in self.tasks:
            entries = [
                (self.colors[run.run_id], run, run.tasks[task])
                for run in self.runs
                if task in run.tasks
            ]
            cls = self.class_of(task)
            ctx = TaskContext(task, entries)
            drift = []
            if task == "driftcaps" and task in self.kept_scores:
                drift = drift_tables(entries, self.kept_scores[task])
            self.page(
                Names.task_page(task),
                "task.jinja",
                page="task",
                title=task,
                task=task,
                description=cls.description if cls else "",
                known=cls is not None,
                entries=entries,
                panels=task_panels(ctx),
                drift=drift,
                metric_rows=_metric_rows(entries),
                ci_methods=_ci_methods(entries),
                sample_counts=self.sample_counts,
            )

    def run_pages(self) -> None:
        for run in self.runs:
            prov = run.provenance
            argv = prov.get("argv")
            command = (
                "evalharness " + shlex.join(str(a) for a in argv)
                if isinstance(argv, list)
                else None
            )
            tasks = []
            for task, result in run.tasks.items():
                info = result.info
                tasks.append(
                    {
                        "task": task,
                        "result": result,
                        "data_hash": info.get("data_hash"),
                        "judge_hash": info.get("judge_hash"),
                        "source": info.get("source"),
                        "settings": info.get("settings"),
                        "options": info.get("options"),
                        "extra": {
                            k: v
                            for k, v in info.items()
                            if k not in {"data_hash", "judge_hash", "source", "settings", "options"}
                        },
                        "samples": self.sample_counts.get((run.run_id, task), 0),
                    }
                )
            judge = prov.get("judge")
            self.page(
                Names.run_page(run.run_id),
                "run.jinja",
                page="run",
                title=f"Run {run.run_id}",
                run=run,
                command=command,
                model_rows=_flatten(prov.get("model") or {}),
                judge=judge,
                packages=sorted((prov.get("packages") or {}).items()),
                tasks=tasks,
                updated=format_time(run.updated_at),
            )

    def compare_page(self, store: RunStore, compare: CompareFn | None) -> None:
        plan = plan_pairs(self.runs)
        pairs: dict[str, str] = {}
        if compare is not None:
            for older, newer in plan.pairs:
                for a, b in ((older, newer), (newer, older)):
                    name = Names.compare_file(a.run_id, b.run_id)
                    payload = compare_pair(compare, store, a.run_id, b.run_id)
                    self.chunk(name, f"compare:{a.run_id}|{b.run_id}", payload)
                    pairs[f"{a.run_id}|{b.run_id}"] = name
                    self.stats.comparisons += 1
        newest = sorted(self.runs, key=lambda r: r.created_at, reverse=True)
        default = (
            [newest[1].run_id, newest[0].run_id] if len(newest) > 1 else [newest[0].run_id] * 2
        )
        note = None
        if compare is None:
            note = (
                "Comparisons are not available: this installation has no "
                "evalharness.stats.comparison."
            )
        elif plan.capped:
            note = (
                f"{plan.possible} pairs of runs share a task; only the {len(plan.pairs)} pairs "
                "involving the newest runs were precomputed."
            )
        if note:
            self.stats.notes.append(note)
        config = {
            "pairs": pairs,
            "default": default,
            "runs": {
                r.run_id: {"label": r.label, "model": r.model, "date": r.date} for r in self.runs
            },
            "samples": {
                r.run_id: {t: Names.samples_page(r.run_id, t) for t in r.tasks} for r in self.runs
            },
            "tasks": {t: Names.task_page(t) for t in self.tasks},
        }
        self.page(
            "compare.html",
            "compare.jinja",
            page="compare",
            title="Compare runs",
            runs=newest,
            default=default,
            note=note,
            config=config,
        )


def build_report(
    store: RunStore,
    out: Path,
    run_ids: Iterable[str] | None = None,
    *,
    compare: CompareFn | None | Literal["auto"] = "auto",
) -> BuildStats:
    """Build the whole site for `run_ids` (every stored run when None) into `out`.

    `compare` computes one direction of a pair (`compare_runs(...).to_json()` when "auto");
    None leaves the compare page without data.
    """
    started = time.perf_counter()
    ids = list(run_ids) if run_ids is not None else [r["run_id"] for r in store.list_runs()]
    if not ids:
        raise InputError(f"{store.path}: no runs stored; run `evalharness run` first")
    runs = load_runs(store, ids)
    compare_fn = default_compare() if compare == "auto" else compare
    out = Path(out).resolve()
    staging = _prepare(out)
    loaded = time.perf_counter()
    try:
        writer = SiteWriter(staging, runs, store.path.name)
        phases = writer.stats.phases
        phases["load"] = loaded - started
        steps = (
            ("static", lambda: _copy_static(staging, writer.stats)),
            ("samples", lambda: writer.samples(store)),
            ("task_pages", writer.task_pages),
            ("run_pages", writer.run_pages),
            ("compare", lambda: writer.compare_page(store, compare_fn)),
            ("index", writer.index),
        )
        for name, step in steps:
            begun = time.perf_counter()
            step()
            phases[name] = time.perf_counter() - begun
        writer.stats.add(write_file(staging / MARKER, f"evalharness {__version__} report\n"))
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stats = writer.stats
    stats.out = out
    stats.runs = len(runs)
    stats.seconds = time.perf_counter() - started
    return stats
