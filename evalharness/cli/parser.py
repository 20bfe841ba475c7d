"""The `evalharness` argument parser: global flags, then each command's own subparser.

Every command module adds its subcommand with `add_parser(commands)`; the order here is the
order `evalharness --help` lists them. Command modules import only what their flags need at
module level (heavy libraries such as torch load inside the command), so building the parser,
and `evalharness --help`, stays fast.
"""

from __future__ import annotations

import argparse

from evalharness import __version__
from evalharness.cli import (
    compare,
    export,
    import_,
    merge,
    parity,
    pipeline,
    report,
    run,
    runs,
    score,
    serve,
    show,
    tasks,
    train,
    verdicts,
)

#: Command modules in the order `--help` lists their commands.
COMMAND_MODULES = (
    run,
    import_,
    tasks,
    show,
    runs,
    verdicts,
    score,
    train,
    pipeline,
    compare,
    report,
    parity,
    export,
    merge,
    serve,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalharness", description="Evaluate language models on judged benchmarks."
    )
    parser.add_argument("--version", action="version", version=f"evalharness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command")
    for module in COMMAND_MODULES:
        module.add_parser(commands)
    return parser
