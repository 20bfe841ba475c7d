"""Precomputed run-versus-run comparisons for the report's compare page.

A static page cannot run the paired tests, so the report computes them at build time with
`evalharness.stats.comparison.compare_runs`, both orders of every pair (the regression and
`worse_by` fields depend on which run is the baseline, so the page never flips a result
itself). The number of pairs grows with the square of the runs; past `MAX_PAIRS` only the pairs
involving the newest runs are kept, and the page says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.errors import InputError
from evalharness.reports.collect import RunInfo
from evalharness.stats.comparison import compare_runs
from evalharness.store.run_store import RunStore

#: Unordered pairs of runs compared at most (each in both orders).
MAX_PAIRS = 300
#: Per-sample differences kept per task and direction, the largest |delta| first.
MAX_SAMPLE_DIFFS = 2000

CompareFn = Callable[[RunStore, str, str], dict[str, Any]]


@dataclass
class PairPlan:
    pairs: list[tuple[RunInfo, RunInfo]]
    possible: int

    @property
    def capped(self) -> bool:
        return len(self.pairs) < self.possible


def default_compare() -> CompareFn:
    """`compare_runs(...).to_json()`: the same tests and gate as `evalharness compare`."""

    def run(store: RunStore, run_a: str, run_b: str) -> dict[str, Any]:
        return compare_runs(store, run_a, run_b).to_json()

    return run


def plan_pairs(runs: Sequence[RunInfo], limit: int = MAX_PAIRS) -> PairPlan:
    """Pairs that share a scored task, the newest runs' pairs first, at most `limit` of them.

    Each pair is (older, newer): the usual reading is 'what changed from the baseline'.
    """
    newest_first = sorted(runs, key=lambda r: (r.created_at, r.run_id), reverse=True)
    pairs = []
    for i, newer in enumerate(newest_first):
        for older in newest_first[i + 1 :]:
            shared = {t for t, r in newer.tasks.items() if r.scored} & {
                t for t, r in older.tasks.items() if r.scored
            }
            if shared:
                pairs.append((older, newer))
    return PairPlan(pairs[:limit], len(pairs))


def trim_samples(result: dict[str, Any]) -> dict[str, Any]:
    """Keep the largest per-sample differences of each task (files stay small for huge runs)."""
    for entry in (result.get("tasks") or {}).values():
        samples = entry.get("samples") or []
        entry["samples_total"] = len(samples)
        if len(samples) > MAX_SAMPLE_DIFFS:
            samples = sorted(samples, key=lambda s: -abs(s.get("delta") or 0.0))
            entry["samples"] = samples[:MAX_SAMPLE_DIFFS]
    return result


def compare_pair(compare: CompareFn, store: RunStore, run_a: str, run_b: str) -> dict[str, Any]:
    """One direction of a comparison; {"error": why} when these runs cannot be compared."""
    try:
        return trim_samples(compare(store, run_a, run_b))
    except InputError as exc:
        return {"error": str(exc)}
