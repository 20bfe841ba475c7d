"""One page per run: how to reproduce it and what it was made of.

The page shows the command line that made the run, the model's and judge's identities, the
package versions and, per task, the hashes that key its caches (data, judge) with its
settings, so two runs that differ can be told apart without opening the store.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from evalharness.reports.collect import RunInfo, format_time
from evalharness.reports.names import Names
from evalharness.reports.writer import SiteWriter

#: Task info fields the run page shows in their own columns; the rest go under "extra".
SHOWN_INFO = ("data_hash", "judge_hash", "source", "settings", "options")


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested identity dicts as (dotted key, text) rows for a key/value table."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key in sorted(value):
            rows += flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list):
        return [(prefix, json.dumps(value, ensure_ascii=False, default=str))]
    return [(prefix, "–" if value is None else str(value))]


def _task_rows(writer: SiteWriter, run: RunInfo) -> list[dict[str, Any]]:
    tasks = []
    for task, result in run.tasks.items():
        info = result.info
        tasks.append(
            {
                "task": task,
                "result": result,
                **{name: info.get(name) for name in SHOWN_INFO},
                "extra": {k: v for k, v in info.items() if k not in SHOWN_INFO},
                "samples": writer.sample_counts.get((run.run_id, task), 0),
            }
        )
    return tasks


def write_run_pages(writer: SiteWriter) -> None:
    """`run-<run id>.html` for every run in the report."""
    for run in writer.runs:
        prov = run.provenance
        argv = prov.get("argv")
        command = (
            "evalharness " + shlex.join(str(a) for a in argv) if isinstance(argv, list) else None
        )
        writer.page(
            Names.run_page(run.run_id),
            "run.jinja",
            page="run",
            title=f"Run {run.run_id}",
            run=run,
            command=command,
            model_rows=flatten(prov.get("model") or {}),
            judge=prov.get("judge"),
            packages=sorted((prov.get("packages") or {}).items()),
            tasks=_task_rows(writer, run),
            updated=format_time(run.updated_at),
        )
