"""`evalharness export RUN`: write a stored run as FastChat MT-Bench or AlpacaEval files

fastchat: DIR/model_answer/MODEL.jsonl (+ model_judgment/JUDGE_single.jsonl when judged) from an
mt_bench run; alpaca-eval: DIR/model_outputs.json (+ annotations.json when judged) from an
alpaca_eval run.
"""

# What is written, and why, is `formats.export`'s docstring.

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evalharness.formats.export import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness export`."""
    parser.add_argument("run_id", help="run id, a unique prefix of one, or 'latest'")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", default=None, help="model name (default: from the run)")
    parser.add_argument("--store", default=None, help="run store (SQLite) path")
    parser.add_argument("--json", action="store_true", help="print the written paths as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from evalharness.formats.export import read_stored, write_export
    from evalharness.store.run_store import open_store

    store = open_store(args.store, read_only=True)
    try:
        run_id = store.resolve_run(args.run_id)
        stored = read_stored(store, run_id, args.format)
    finally:
        store.close()
    written = write_export(stored, args.format, Path(args.out), args.name)
    if args.json:
        print(json.dumps({"run_id": run_id, "written": [str(p) for p in written]}))
    else:
        for path in written:
            print(path)
    return 0
