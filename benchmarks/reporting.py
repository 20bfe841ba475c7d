"""How the benchmark scripts hand their numbers over: a rich table on stdout, the JSON file, and
the warning when other processes shared the CPU during a timed region.

One place for these keeps every script's output alike (same threshold for "busy", same JSON
layout on disk), and keeps `rich` out of the workers: it is imported only when a table is made.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Above this many cores of other processes' CPU time a timed region counts as contended.
BUSY_CORES = 0.2


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON at `path`, its folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def rich_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    left: Sequence[str] = (),
    caption: str | None = None,
) -> Any:
    """A rich Table: `columns` right-aligned except those named in `left`, one row per cells
    (a row may stop short of the last columns), and `caption` under it."""
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    for cells in rows:
        table.add_row(*cells)
    return table


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """A table cell: `-` for a missing figure."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def shape_cells(row: dict[str, Any], *keys: str) -> list[str]:
    """`row[key]` as text for each key: the N, D, V... columns of a result row."""
    return [str(row[key]) for key in keys]


def busy(row: dict[str, Any]) -> bool:
    """Whether other processes used the CPU during this row's timed region."""
    return (row.get("other_processes_cores") or 0.0) > BUSY_CORES


def busy_note(row: dict[str, Any]) -> str:
    return f"busy: others used {row['other_processes_cores']:.2f} cores" if busy(row) else ""


def print_peak_methods(console: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Which methods measured the rows' peak memory (they differ in what they can see)."""
    methods = sorted({row["peak_method"] for row in rows if row.get("peak_method")})
    if methods:
        console.print(f"peak memory measured by: {'; '.join(methods)}")


def warn_if_busy(console: Any, rows: Sequence[dict[str, Any]], during: str) -> None:
    """The closing warning when any row was timed on a contended CPU; `during` names what
    was timed ("timed run(s)")."""
    count = sum(busy(row) for row in rows)
    if count:
        console.print(
            f"[yellow]warning: other processes used CPU during {count} {during} "
            "(other_processes_cores); those times are unreliable[/yellow]"
        )


def save_report(
    console: Any,
    out: Path,
    report: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    *,
    dry_run: bool,
    during: str,
) -> bool:
    """A benchmark's ending: the report written to `out` (said so) and the contention warning;
    on a dry run nothing is written and False comes back."""
    if dry_run:
        console.print(f"dry run: nothing measured, {out} not written")
        return False
    write_json(out, report)
    console.print(f"wrote {out}")
    warn_if_busy(console, rows, during)
    return True
