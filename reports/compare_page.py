"""The compare page: pick two runs and see their paired differences per task.

A static page cannot run the paired tests, so each direction of every planned pair is computed
here (`comparisons.compare_pair`) and written as a chunk the page loads when that pair is
picked. When the comparisons cannot be computed or were capped, the page and `--json` say so.
"""

from __future__ import annotations

from evalharness.reports.comparisons import CompareFn, compare_pair, plan_pairs
from evalharness.reports.names import Names
from evalharness.reports.writer import SiteWriter
from evalharness.store.run_store import RunStore


def write_compare_page(writer: SiteWriter, store: RunStore, compare: CompareFn | None) -> None:
    """`compare.html` and one chunk per direction of each planned pair (none without `compare`)."""
    runs = writer.runs
    plan = plan_pairs(runs)
    pairs: dict[str, str] = {}
    if compare is not None:
        for older, newer in plan.pairs:
            for a, b in ((older, newer), (newer, older)):
                name = Names.compare_file(a.run_id, b.run_id)
                payload = compare_pair(compare, store, a.run_id, b.run_id)
                writer.chunk(name, f"compare:{a.run_id}|{b.run_id}", payload)
                pairs[f"{a.run_id}|{b.run_id}"] = name
                writer.stats.comparisons += 1
    newest = sorted(runs, key=lambda r: r.created_at, reverse=True)
    default = [newest[1].run_id, newest[0].run_id] if len(newest) > 1 else [newest[0].run_id] * 2
    note = None
    if compare is None:
        note = (
            "Comparisons are not available: this installation has no evalharness.stats.comparison."
        )
    elif plan.capped:
        note = (
            f"{plan.possible} pairs of runs share a task; only the {len(plan.pairs)} pairs "
            "involving the newest runs were precomputed."
        )
    if note:
        writer.stats.notes.append(note)
    config = {
        "pairs": pairs,
        "default": default,
        "runs": {r.run_id: {"label": r.label, "model": r.model, "date": r.date} for r in runs},
        "samples": {r.run_id: {t: Names.samples_page(r.run_id, t) for t in r.tasks} for r in runs},
        "tasks": {t: Names.task_page(t) for t in writer.tasks},
    }
    writer.page(
        "compare.html",
        "compare.jinja",
        page="compare",
        title="Compare runs",
        runs=newest,
        default=default,
        note=note,
        config=config,
    )
