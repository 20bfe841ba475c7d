"""HTML report build time and size for a large store (10,000 samples by default).

Run from the repository root::

    python benchmarks/report.py [--runs 4] [--samples-per-task 500] [--browser]

What is built
    A synthetic run store written straight through `RunStore` by `tests/report_stores.py`
    (the helper the report tests use): `--runs` complete runs, a day apart, over the five
    built-in tasks (mt_bench, alpaca_eval, driftcaps, liconbench, truematch) with
    `--samples-per-task` samples each, every sample with the response(s), verdict(s), scores
    and task metrics of the real stored shapes. The defaults give 4 x 5 x 500 = 10,000
    samples (25,000 responses: MT-Bench has two turns, LIConBench three rounds).

What is timed
    `evalharness.reports.site.build_report` in-process, the whole build: reading the store,
    one index, one search chunk and 100-sample detail chunks per run and task, every page,
    and the comparisons (each pair of runs in both orders, through evalharness.stats.comparison).
    Imports (the task registry pulls in pandas and scipy) and one small untimed build come
    first, so import and first-use costs stay out of the number. The table shows the time
    per build step, the page count, the number and size of files, the largest chunk a page
    loads when it opens (a run x task index) and the peak RSS of the build (VmHWM after
    resetting it, where the kernel allows).

Browser (`--browser`)
    With /usr/bin/chromium and Playwright, also times opening the largest samples page until
    its first rows show, and opening one sample's details (one lazy chunk).

Target
    The build finishes within `TARGET_SECONDS` (10 s) on a 2-core CPU.

Output
    A table on stdout and JSON at `--out` (default `benchmarks/results/report.json`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from measure import (  # beside this script
    fmt,
    machine_info,
    proc_status_kib,
    reset_peak_rss,
    trim_heap,
)
from reporting import write_json
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic store writer the tests use

from report_stores import ALL_TASKS, build_store  # noqa: E402

DEFAULT_OUT = Path("benchmarks/results/report.json")
TARGET_SECONDS = 10.0
MIB = 1024**2


def site_sizes(root: Path) -> dict[str, Any]:
    """Files, bytes, and the chunks a reader's browser loads (index on open, details later)."""
    files = [p for p in root.rglob("*") if p.is_file()]
    indexes = [p.stat().st_size for p in root.glob("data/samples/*/*/index.js")]
    details = [p.stat().st_size for p in root.glob("data/samples/*/*/p*.js")]
    searches = [p.stat().st_size for p in root.glob("data/samples/*/*/search.js")]
    pages = [p.stat().st_size for p in root.glob("*.html")]
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "html_pages": len(pages),
        "largest_page_bytes": max(pages, default=0),
        "largest_index_chunk_bytes": max(indexes, default=0),
        "largest_search_chunk_bytes": max(searches, default=0),
        "mean_detail_chunk_bytes": round(sum(details) / len(details)) if details else 0,
        "detail_chunks": len(details),
    }


def time_browser(root: Path, page_name: str) -> dict[str, Any] | None:
    """Seconds until the samples page shows rows, and until one sample's details show."""
    try:
        from browser import chromium, open_page  # tests/browser.py
    except ImportError:
        return None
    if not Path("/usr/bin/chromium").exists():
        return None
    with chromium() as browser:
        started = time.perf_counter()
        page, errors = open_page(browser, root / page_name)
        page.wait_for_selector("#sample-rows tr.sample-row")
        first_rows = time.perf_counter() - started
        started = time.perf_counter()
        page.locator("#sample-rows tr.sample-row").nth(7).click()
        page.locator(".sample-detail").wait_for()
        detail = time.perf_counter() - started
        return {
            "page": page_name,
            "first_rows_s": round(first_rows, 3),
            "open_detail_s": round(detail, 3),
            "errors": errors.all,
        }


def render_table(result: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("samples", f"{result['samples']:,}"),
        ("runs x tasks", f"{result['runs']} x {len(result['tasks'])}"),
        ("store write (s)", fmt(result["store_seconds"], ".2f")),
        ("report build (s)", fmt(result["seconds"], ".2f")),
        *((f"  {name} (s)", fmt(value, ".2f")) for name, value in result["phases"].items()),
        ("comparisons (ordered pairs)", str(result["comparisons"])),
        ("HTML pages", str(result["pages"])),
        ("files", f"{result['sizes']['files']:,}"),
        ("total size (MiB)", fmt(result["sizes"]["bytes"] / MIB, ".1f")),
        ("largest page (KiB)", fmt(result["sizes"]["largest_page_bytes"] / 1024, ".0f")),
        (
            "largest index chunk (KiB)",
            fmt(result["sizes"]["largest_index_chunk_bytes"] / 1024, ".0f"),
        ),
        (
            "largest search chunk (KiB)",
            fmt(result["sizes"]["largest_search_chunk_bytes"] / 1024, ".0f"),
        ),
        ("mean detail chunk (KiB)", fmt(result["sizes"]["mean_detail_chunk_bytes"] / 1024, ".0f")),
        ("peak RSS (MiB)", fmt(result["peak_rss_mib"], ".0f")),
    ]
    if result.get("browser"):
        rows += [
            ("browser: first rows (s)", fmt(result["browser"]["first_rows_s"], ".2f")),
            ("browser: open a sample (s)", fmt(result["browser"]["open_detail_s"], ".2f")),
        ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs in the store")
    parser.add_argument("--samples-per-task", type=int, default=500, help="samples per task")
    parser.add_argument("--browser", action="store_true", help="also time the samples page")
    parser.add_argument("--keep", type=Path, default=None, help="also copy the site here")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.samples_per_task < 1:
        parser.error("--runs and --samples-per-task must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(width=max(100, Console().width))
    from evalharness.reports.site import build_report
    from evalharness.store.run_store import RunStore

    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        directory = Path(tmp)
        # Untimed warm-up: imports, the task registry, templates, the compare module.
        build_store(directory / "warm.sqlite", n_runs=2, samples_per_task=3)
        warm = RunStore(directory / "warm.sqlite")
        build_report(warm, directory / "warm-site")
        warm.close()

        console.print(
            f"writing a store: {args.runs} runs x {len(ALL_TASKS)} tasks x "
            f"{args.samples_per_task} samples ..."
        )
        started = time.perf_counter()
        _, samples = build_store(
            directory / "store.sqlite", n_runs=args.runs, samples_per_task=args.samples_per_task
        )
        store_seconds = time.perf_counter() - started
        store_bytes = (directory / "store.sqlite").stat().st_size

        console.print("building the report ...")
        store = RunStore(directory / "store.sqlite")
        trim_heap()
        exact_peak = reset_peak_rss()
        baseline_kib = proc_status_kib("VmRSS")
        stats = build_report(store, directory / "site")
        peak_kib = proc_status_kib("VmHWM")
        store.close()
        sizes = site_sizes(directory / "site")
        browser = None
        if args.browser:
            first = sorted((directory / "site").glob("samples-*-mt_bench.html"))[0]
            browser = time_browser(directory / "site", first.name)
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(directory / "site", args.keep)

    result: dict[str, Any] = {
        "benchmark": "report",
        "runs": args.runs,
        "tasks": list(ALL_TASKS),
        "samples_per_task": args.samples_per_task,
        "samples": samples,
        "store_bytes": store_bytes,
        "store_seconds": round(store_seconds, 3),
        "seconds": round(stats.seconds, 3),
        "phases": {name: round(value, 3) for name, value in stats.phases.items()},
        "pages": stats.pages,
        "comparisons": stats.comparisons,
        "sizes": sizes,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "extra_peak_rss_mib": round((peak_kib - baseline_kib) / 1024, 1) if exact_peak else None,
        "browser": browser,
        "target_seconds": TARGET_SECONDS,
        "target_met": stats.seconds <= TARGET_SECONDS,
        "machine": machine_info(),
    }
    title = f"evalharness report: {samples:,} samples, {args.runs} runs"
    console.print(render_table(result, title))
    verdict = "[green]met[/green]" if result["target_met"] else "[red]NOT met[/red]"
    console.print(f"build {stats.seconds:.2f} s; target <= {TARGET_SECONDS:g} s {verdict}")
    write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
