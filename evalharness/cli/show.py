"""`evalharness show RUN`: show a stored run"""

# A stored run's summary, as `run` printed it, without running anything.
# The store is opened read-only, so `show` works on a store that another process is writing or
# that lives on a read-only file system.

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness show`."""
    parser.add_argument("run_id", help="run id, a unique prefix of one, or 'latest'")
    parser.add_argument("--store", default=None)
    parser.add_argument("--json", action="store_true")


def cmd_show(args: argparse.Namespace) -> int:
    from evalharness.cli.run import print_warnings
    from evalharness.console import out_console, summary_table
    from evalharness.engine.summary import stored_run_summary
    from evalharness.store.run_store import open_store

    store = open_store(args.store, read_only=True)
    try:
        summary = stored_run_summary(store, store.resolve_run(args.run_id))
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary))
        return 0
    out_console.print(summary_table(summary))
    prov = summary["provenance"]
    out_console.print(f"status {summary['status']} · judge {summary['judge']}")
    out_console.print(f"packages {json.dumps(prov['packages'])}")
    if prov.get("devices"):
        out_console.print(f"devices {json.dumps(prov['devices'])}", markup=False)
    print_warnings(summary["warnings"])
    return 0
