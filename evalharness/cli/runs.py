"""`evalharness runs`: one line per stored run (id, status, model, judge), read-only."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    """Add the `runs` subcommand to an argparse subparsers object."""
    runs = commands.add_parser("runs", help="list stored runs")
    runs.add_argument("--store", default=None)


def cmd_runs(args: argparse.Namespace) -> int:
    from evalharness.store.run_store import open_store

    store = open_store(args.store, read_only=True)
    try:
        for run in store.list_runs():
            print(f"{run['run_id']}\t{run['status']}\t{run['model']}\tjudge={run['judge']}")
    finally:
        store.close()
    return 0
