"""`evalharness tasks`: list the tasks `run --tasks` accepts, with one line on each."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    """Add the `tasks` subcommand to an argparse subparsers object."""
    commands.add_parser("tasks", help="list available tasks")


def cmd_tasks(_: argparse.Namespace) -> int:
    from evalharness.tasks.registry import available_tasks

    for name, cls in available_tasks().items():
        print(f"{name}\t{cls.description}")
    return 0
