"""The per-sample data of every run and task, and the samples page that browses it.

This step runs first and is the largest: it reads every stored sample once, writes its index,
search text and detail chunks, and leaves the counts (and DriftCaps' scores) on the writer for
the task and run pages that follow.
"""

from __future__ import annotations

from evalharness.reports.collect import RunInfo, sample_records
from evalharness.reports.data import PAGE_SIZE, detail, sample_index
from evalharness.reports.names import Names
from evalharness.reports.writer import SiteWriter
from evalharness.store.run_store import RunStore

#: Tasks whose per-sample scores the task page needs (DriftCaps' drift tables).
KEEP_SCORES = {"driftcaps"}


def write_samples(writer: SiteWriter, store: RunStore) -> None:
    """Index, search text and detail chunks per run and task, then its samples page."""
    for run in writer.runs:
        for task in run.tasks:
            records = list(sample_records(store, run.run_id, task))
            base = Names.sample_dir(run.run_id, task)
            key = Names.sample_key(run.run_id, task)
            index, search = sample_index(records)
            writer.chunk(base + "index.js", f"index:{key}", index)
            writer.chunk(base + "search.js", f"search:{key}", search)
            for start in range(0, len(records), PAGE_SIZE):
                number = start // PAGE_SIZE
                page = [detail(r) for r in records[start : start + PAGE_SIZE]]
                writer.chunk(f"{base}p{number:05d}.js", f"page:{key}:{number}", page)
            if task in KEEP_SCORES:
                writer.kept_scores.setdefault(task, {})[run.run_id] = {
                    r.sample_id: r.scores or {} for r in records
                }
            writer.sample_counts[(run.run_id, task)] = len(records)
            writer.fallbacks[(run.run_id, task)] = index["fallbacks"]
            writer.stats.samples += len(records)
            _samples_page(writer, run, task, len(records), base, key)


def _samples_page(writer: SiteWriter, run: RunInfo, task: str, n: int, base: str, key: str) -> None:
    others = [
        {"label": r.label, "file": Names.samples_page(r.run_id, task), "current": r is run}
        for r in writer.runs
        if task in r.tasks
    ]
    config = {"key": key, "base": base, "n": n, "run": run.run_id, "task": task}
    writer.page(
        Names.samples_page(run.run_id, task),
        "samples.jinja",
        page="samples",
        title=f"{task} samples · {run.label}",
        run=run,
        task=task,
        n=n,
        fallbacks=writer.fallbacks[(run.run_id, task)],
        known=writer.class_of(task, run) is not None,
        others=others,
        config=config,
    )
