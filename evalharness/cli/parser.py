"""The command table: which module declares each subcommand, and which function runs it.

A command module's docstring is its `--help`, as in click and typer: the first paragraph,
"`evalharness NAME ...`: what it does", names the command and gives the one line
`evalharness --help` lists; the paragraphs after it are the description `evalharness NAME
--help` prints (argparse reflows them, so line breaks in the docstring do not matter). The
module's `add_arguments(parser)` adds the command's flags. A module with several commands
(`verdicts`, `train`) lists them in `SUBCOMMANDS` instead: one `add_*_arguments` function per
command, whose docstring is that command's help in the same form.

The order of `COMMAND_MODULES` is the order `evalharness --help` lists the commands;
`build_parser` is the whole parser (global flags, then each command's subparser); `main` runs
the function `COMMANDS` names for the parsed command.

Command modules import only what their flags need at module level (heavy libraries such as
torch load inside the command), so building the parser, and `evalharness --help`, stays fast.
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

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


#: Adds one command's flags to its subparser.
AddArguments = Callable[[argparse.ArgumentParser], None]

#: The first paragraph of a command's docstring: "`evalharness NAME ...`: help".
_HEADLINE = re.compile(r"`evalharness (?P<name>[\w-]+)[^`]*`:\s+(?P<help>.*)", re.DOTALL)


def declarations(module: ModuleType) -> Iterator[tuple[str, AddArguments]]:
    """The commands `module` declares, each as its docstring (the help) and its flags function."""
    subcommands = getattr(module, "SUBCOMMANDS", None)
    if subcommands is None:
        yield module.__doc__ or "", module.add_arguments
        return
    for add_arguments in subcommands:
        yield add_arguments.__doc__ or "", add_arguments


def add_command(commands: Any, doc: str, add_arguments: AddArguments) -> argparse.ArgumentParser:
    """Add the subcommand `doc` declares to an argparse subparsers object, with its flags."""
    headline, _, description = inspect.cleandoc(doc).partition("\n\n")
    match = _HEADLINE.fullmatch(headline)
    if match is None:
        raise ValueError(f"a command's docstring starts with `evalharness NAME`: help, not {doc!r}")
    parser = commands.add_parser(
        match["name"], help=" ".join(match["help"].split()), description=description or None
    )
    add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalharness", description="Evaluate language models on judged benchmarks."
    )
    parser.add_argument("--version", action="version", version=f"evalharness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command")
    for module in COMMAND_MODULES:
        for doc, add_arguments in declarations(module):
            add_command(commands, doc, add_arguments)
    return parser
