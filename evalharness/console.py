"""Terminal output: progress bars on stderr, the summary table, one-line errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

err_console = Console(stderr=True)
out_console = Console()


@contextlib.contextmanager
def rich_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, so `--json` output on stdout stays machine-readable."""
    if total == 0:
        yield lambda advance: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda advance: progress.advance(task_id, advance)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def summary_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"run {result['run_id']} · model {result['model']}", title_justify="left")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    # How each interval was made: a name in stats.intervals.CI_METHODS, blank if unrecorded.
    table.add_column("CI method")
    for task, entry in result["tasks"].items():
        ci = entry.get("ci", {})
        methods = entry.get("ci_method") or {}
        first = True
        for metric, value in (entry.get("metrics") or {}).items():
            interval = ci.get(metric)
            table.add_row(
                task if first else "",
                metric,
                _format(value),
                f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "",
                methods.get(metric, "") if interval else "",
            )
            first = False
        table.add_row("", "samples / failures", f"{entry['n']} / {entry['failures']}", "", "")
    return table
