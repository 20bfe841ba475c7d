"""One page per task: every run's metrics side by side, the task's charts, its drift tables.

The metric table lists headline metrics first so the numbers a task is judged by lead; the
charts come from `panels`, which knows each task's metrics; DriftCaps also gets its paired
drift tables from the scores the samples step kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalharness.reports.collect import RunInfo, TaskResult, headline_union
from evalharness.reports.names import Names
from evalharness.reports.panels import TaskContext, drift_tables, task_panels
from evalharness.reports.writer import SiteWriter

Entry = tuple[int, RunInfo, TaskResult]


def metric_rows(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Rows of the task page's metric table: headline metrics first, then the rest by name."""
    headline = headline_union(result for _, _, result in entries)
    others = sorted({m for _, _, r in entries for m in r.metrics} - set(headline))
    rows = []
    for metric in [*headline, *others]:
        cells = []
        for _, _, result in entries:
            value = result.metrics.get(metric)
            cells.append(
                {
                    "value": value,
                    "ci": result.interval(metric),
                    "method": result.interval_method(metric),
                }
            )
        if all(c["value"] is None for c in cells):
            continue
        rows.append({"metric": metric, "headline": metric in headline, "cells": cells})
    return rows


def ci_methods(entries: Sequence[Entry]) -> list[str]:
    """The interval methods the task page's metrics use, each "name: description"."""
    found = {
        text
        for _, _, result in entries
        for metric in result.ci
        if (text := result.interval_method(metric)) is not None
    }
    return sorted(found)


def write_task_pages(writer: SiteWriter) -> None:
    """`task-<task>.html` for every task any run has."""
    for task in writer.tasks:
        entries = [
            (writer.colors[run.run_id], run, run.tasks[task])
            for run in writer.runs
            if task in run.tasks
        ]
        drift = []
        if task == "driftcaps" and task in writer.kept_scores:
            drift = drift_tables(entries, writer.kept_scores[task])
        writer.page(
            Names.task_page(task),
            "task.jinja",
            page="task",
            title=task,
            task=task,
            **writer.describe(task),
            entries=entries,
            panels=task_panels(TaskContext(task, entries)),
            drift=drift,
            metric_rows=metric_rows(entries),
            ci_methods=ci_methods(entries),
            sample_counts=writer.sample_counts,
        )
