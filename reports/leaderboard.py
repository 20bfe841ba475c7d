"""The report's front page: every run against every task's headline metrics, newest first.

The columns are the union of the headline metrics the runs' tasks declare, so a task added
later appears without touching this module; under the table, one card per task links to its
page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalharness.reports.collect import RunInfo, headline_union
from evalharness.reports.names import Names
from evalharness.reports.writer import SiteWriter


def headline_columns(runs: Sequence[RunInfo], task: str) -> list[str]:
    """The headline metrics any run of `task` declares, in first-seen order."""
    return headline_union(run.tasks[task] for run in runs if task in run.tasks)


def write_index(writer: SiteWriter) -> None:
    """`index.html`: the leaderboard table and the task cards."""
    columns = [
        {"task": t, "file": Names.task_page(t), "metrics": headline_columns(writer.runs, t)}
        for t in writer.tasks
    ]
    rows = []
    for run in sorted(writer.runs, key=lambda r: r.created_at, reverse=True):
        cells = []
        for column in columns:
            result = run.tasks.get(column["task"])
            for metric in column["metrics"]:
                value = result.number(metric) if result else None
                cells.append(
                    {
                        "value": value,
                        "ci": result.interval(metric) if result else None,
                        "method": result.interval_method(metric) if result else None,
                    }
                )
        rows.append({"run": run, "cells": cells})
    cards: list[dict[str, Any]] = [
        {
            "task": task,
            "file": Names.task_page(task),
            **writer.describe(task),
            "runs": sum(task in r.tasks for r in writer.runs),
        }
        for task in writer.tasks
    ]
    writer.page(
        "index.html", "index.jinja", page="index", title="Leaderboard", columns=columns,
        rows=rows, cards=cards,
    )  # fmt: skip
