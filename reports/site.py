"""Build the static report site: the entry point, and the order of its steps.

Each kind of page has its own module (`leaderboard`, `task_pages`, `run_pages`,
`sample_pages`, `compare_page`); they render through one `SiteWriter`, which counts what is
written. The site is built in a staging directory and swapped into place at the end
(`staging`), so a reader never sees half a report and a failed build leaves the previous one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from evalharness import __version__
from evalharness.errors import InputError
from evalharness.reports.collect import load_runs
from evalharness.reports.compare_page import write_compare_page
from evalharness.reports.comparisons import CompareFn, default_compare
from evalharness.reports.data import write_text as write_file
from evalharness.reports.leaderboard import write_index
from evalharness.reports.run_pages import write_run_pages
from evalharness.reports.sample_pages import write_samples
from evalharness.reports.staging import MARKER, copy_static, prepare, publish
from evalharness.reports.task_pages import write_task_pages
from evalharness.reports.writer import BuildStats, SiteWriter
from evalharness.store.run_store import RunStore

__all__ = ["BuildStats", "build_report"]


def _copy_static(writer: SiteWriter) -> None:
    for size in copy_static(writer.root):
        writer.stats.add(size)


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
    staging = prepare(out)
    loaded = time.perf_counter()
    try:
        writer = SiteWriter(staging, runs, store.path.name)
        phases = writer.stats.phases
        phases["load"] = loaded - started
        # The samples step comes first: the task and run pages show what it counted.
        steps: tuple[tuple[str, Callable[[], object]], ...] = (
            ("static", lambda: _copy_static(writer)),
            ("samples", lambda: write_samples(writer, store)),
            ("task_pages", lambda: write_task_pages(writer)),
            ("run_pages", lambda: write_run_pages(writer)),
            ("compare", lambda: write_compare_page(writer, store, compare_fn)),
            ("index", lambda: write_index(writer)),
        )
        for name, step in steps:
            begun = time.perf_counter()
            step()
            phases[name] = time.perf_counter() - begun
        writer.stats.add(write_file(staging / MARKER, f"evalharness {__version__} report\n"))
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stats = writer.stats
    stats.out = out
    stats.runs = len(runs)
    stats.seconds = time.perf_counter() - started
    return stats
