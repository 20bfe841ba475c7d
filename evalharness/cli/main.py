"""`evalharness` entry point: parse the command line, run the command, map errors to exit codes.

An `InputError` or `BackendError` is the user's to fix: it is printed as one line,
`evalharness: error: ...`, with its exit code, never as a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from evalharness.backends.spec import ALIASES
from evalharness.cli.parser import COMMANDS, build_parser
from evalharness.errors import BackendError, InputError


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
