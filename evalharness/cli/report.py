"""`evalharness report`: write a static HTML report of stored runs (opens offline from file://)

Leaderboard, a page per task with charts, a provenance page per run, searchable per-sample pages and
a run-versus-run comparison page, as a directory of static files that needs no server and no
network.
"""

# The site opens from file:// with no network: charts are inline SVG, sample data are script
# files loaded on demand. See `evalharness.reports.site` for how it is written.

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evalharness.store.paths import default_store_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness report`."""
    parser.add_argument(
        "--store", default=None, help=f"run store (default: {default_store_path()})"
    )
    parser.add_argument(
        "--runs",
        default=None,
        help="comma-separated runs to include: ids, prefixes or 'latest' (default: all)",
    )
    parser.add_argument("--out", required=True, help="output directory (created or replaced)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary of the build")


def cmd_report(args: argparse.Namespace) -> int:
    """Build the report; InputError (one line, exit 2) for an unusable store, run or --out."""
    from evalharness.reports.collect import resolve_runs
    from evalharness.reports.site import build_report
    from evalharness.store.run_store import open_store

    references = None if args.runs is None else args.runs.split(",")
    store = open_store(args.store, read_only=True)
    try:
        run_ids = resolve_runs(store, references)
        stats = build_report(store, Path(args.out), run_ids)
    finally:
        store.close()
    summary: dict[str, Any] = {
        "out": str(stats.out),
        "pages": stats.pages,
        "runs": stats.runs,
        "samples": stats.samples,
        "seconds": round(stats.seconds, 3),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"wrote {stats.pages} pages for {stats.runs} runs and {stats.samples} samples "
            f"to {stats.out} in {stats.seconds:.1f} s; open {stats.out / 'index.html'}"
        )
        for note in stats.notes:
            print(f"note: {note}")
    return 0
