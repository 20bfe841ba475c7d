"""`evalharness` entry point: parse the command line, run the command, map errors to exit codes.

An `InputError` or `BackendError` is the user's to fix: it is printed as one line,
`evalharness: error: ...`, with its exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from evalharness.backends.spec import ALIASES
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
from evalharness.cli.parser import build_parser
from evalharness.errors import BackendError, InputError

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


def _check_environment() -> None:
    """Environment variables the user set are input too: check them before any work starts."""
    from evalharness.kernels.implementations import check_scoring_env

    check_scoring_env()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 2
    if (getattr(args, "model", None) or "").lower() in ALIASES:
        # The built-in model is local: never let transformers wait on the hub for it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        _check_environment()
        return COMMANDS[args.command](args)
    except (InputError, BackendError) as exc:
        print(f"evalharness: error: {exc}", file=sys.stderr)
        return exc.exit_code
