"""`evalharness tasks`: list available tasks"""

# One line per task `run --tasks` accepts: its name and description (`tasks.registry`).

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`evalharness tasks` takes no flags."""


def cmd_tasks(_: argparse.Namespace) -> int:
    from evalharness.tasks.registry import available_tasks

    for name, cls in available_tasks().items():
        print(f"{name}\t{cls.description}")
    return 0
