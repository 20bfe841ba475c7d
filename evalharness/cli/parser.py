"""The command table: which module adds each subcommand's flags, and which function runs it.

Every command module adds its subcommand with `add_parser(commands)`; the order here is the
order `evalharness --help` lists them. `build_parser` is the whole parser (global flags, then
each command's subparser); `main` runs the function `COMMANDS` names for the parsed command.

Command modules import only what their flags need at module level (heavy libraries such as
torch load inside the command), so building the parser, and `evalharness --help`, stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

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

#: Each command's function: it takes the parsed arguments and returns the exit code.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run.cmd_run,
    "import": import_.cmd_import,
    "agreement": verdicts.cmd_agreement,
    "drift": verdicts.cmd_drift,
    "judge": verdicts.cmd_judge,
    "tasks": tasks.cmd_tasks,
    "show": show.cmd_show,
    "runs": runs.cmd_runs,
    "serve": serve.cmd_serve,
    "score": score.cmd_score,
    "merge": merge.cmd_merge,
    "train": train.cmd_train,
    "methods": train.cmd_methods,
    "pipeline": pipeline.cmd_pipeline,
    "compare": compare.cmd_compare,
    "report": report.cmd_report,
    "parity": parity.cmd_parity,
    "export": export.cmd_export,
}


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
