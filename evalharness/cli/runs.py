"""`evalharness runs`: list stored runs"""

# One line per stored run (id, status, model, judge); the store is opened read-only.

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness runs`."""
    parser.add_argument("--store", default=None)


def cmd_runs(args: argparse.Namespace) -> int:
    from evalharness.store.run_store import open_store

    store = open_store(args.store, read_only=True)
    try:
        for run in store.list_runs():
            print(f"{run['run_id']}\t{run['status']}\t{run['model']}\tjudge={run['judge']}")
    finally:
        store.close()
    return 0
