"""Verdicts through the verdict cache: judge every item no earlier run has judged, count the rest.

A verdict is cached under the judge's identity hash plus the item it judged, so the same answer
graded by the same judge is never paid for twice. Judging is where a run meets flaky services
and call budgets, so nothing here is dropped silently: an unparseable verdict is asked again
and then stored as a counted failure, and an item whose request failed or that would pass
`--max-judge-calls` is left unjudged (not stored), which makes the run partial and lets a
re-run finish exactly that work.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evalharness.engine.progress import Progress
from evalharness.engine.requests import FailedResult, canonical_json, sha256_hex, to_jsonable
from evalharness.engine.run_types import Responses, SlotWork, Verdicts
from evalharness.errors import BackendError
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import JudgeItem, Task, TaskData

#: How many judge items are judged and committed together.
JUDGE_CHUNK = 8


@dataclass
class JudgeStats:
    """What judging did in this invocation; every failure is counted, none is dropped."""

    #: Judge calls if every verdict parses at its first attempt (before the verdict cache).
    estimated_calls: int = 0
    #: The most judge calls judging can make: every unparseable verdict asked again
    #: `judge.retries` times. `--max-judge-calls` caps the calls actually made.
    max_calls: int = 0
    items: int = 0
    cached: int = 0
    judged: int = 0
    parse_retries: int = 0
    parse_failures: int = 0
    failed_requests: int = 0
    over_budget: int = 0
    http_errors: dict[str, int] = field(default_factory=dict)

    @property
    def unjudged(self) -> int:
        return self.failed_requests + self.over_budget

    def to_json(self) -> dict[str, Any]:
        return {
            "estimated_calls": self.estimated_calls,
            "max_calls": self.max_calls,
            "items": self.items,
            "cached": self.cached,
            "judged": self.judged,
            "parse_retries": self.parse_retries,
            "parse_failures": self.parse_failures,
            "unjudged": {"request_failed": self.failed_requests, "over_budget": self.over_budget},
            "http_errors": self.http_errors,
        }


def unjudged_verdict(reason: str) -> dict[str, Any]:
    """Stands in for a verdict the judge could not give this time; never cached."""
    return {
        "failure": True,
        "unjudged": True,
        "error": reason,
        "rating": -1.0,
        "preference": None,
        "winner": None,
        "label": None,
    }


#: One item a sample needs judged, with its cache key.
_JudgeEntry = SlotWork[JudgeItem]


def _plan_items(
    judge: Any, tasks: Sequence[Task], loaded: dict[str, TaskData], responses: Responses
) -> list[_JudgeEntry]:
    """Every item the tasks' samples ask the judge about, keyed by judge and item."""
    judge_hash = judge.identity_hash
    pending: list[_JudgeEntry] = []
    for task in tasks:
        for sample in loaded[task.name].samples:
            items = task.judge_items(sample, responses[(task.name, sample.id)])
            for slot, item in items.items():
                key_material = {
                    "item": to_jsonable(item),
                    "extra": judge.item_key_fields(item),
                }
                key = sha256_hex(judge_hash + canonical_json(key_material))
                pending.append(SlotWork(task.name, sample.id, slot, item, key))
    return pending


def judge_tasks(
    store: RunStore,
    judge: Any,
    tasks: Sequence[Task],
    loaded: dict[str, TaskData],
    responses: Responses,
    *,
    run_id: str,
    budget: int | None,
    progress: Progress,
    calls: dict[str, int],
    stats: JudgeStats,
) -> Verdicts:
    """Judge every item not already in the verdict cache.

    A verdict that does not parse is asked again up to `judge.retries` times, then stored as
    a counted failure. An item whose request failed after the backend's own retries, or
    that would exceed the call budget, is left unjudged (not stored), so a re-run asks
    again and judges nothing twice. Calls made are added to `calls["judge"]`, outcomes to
    `stats`.
    """
    verdicts: Verdicts = defaultdict(dict)
    if judge is None:
        return verdicts
    judge_hash = judge.identity_hash
    pending = _plan_items(judge, tasks, loaded, responses)
    stats.items += len(pending)
    cached = store.get_verdicts(p.key for p in pending)
    hits = []
    for entry in pending:
        if entry.key in cached:
            verdicts[(entry.task, entry.sample_id)][entry.slot] = cached[entry.key]
            hits.append(entry.link("verdict"))
    stats.cached += len(hits)
    store.put_links(run_id, hits)
    unique: dict[str, _JudgeEntry] = {}
    duplicates: dict[str, list[_JudgeEntry]] = defaultdict(list)
    for entry in pending:
        if entry.key not in cached:
            unique.setdefault(entry.key, entry)
            duplicates[entry.key].append(entry)
    queue: deque[tuple[_JudgeEntry, int]] = deque((e, 0) for e in unique.values())
    batch = max(JUDGE_CHUNK, judge.backend.batch_size if judge.backend else len(queue))

    def leave_unjudged(entry: _JudgeEntry, reason: str) -> None:
        for duplicate in duplicates[entry.key]:
            verdicts[(duplicate.task, duplicate.sample_id)][duplicate.slot] = unjudged_verdict(
                reason
            )

    with progress("judging", len(unique)) as advance:
        while queue:
            chunk, per_item = [], []
            while queue and len(chunk) < batch:
                entry, attempt = queue.popleft()
                requests = judge.requests_for(entry.work, attempt)
                spent = calls["judge"] + sum(len(r) for r in per_item)
                if budget is not None and spent + len(requests) > budget:
                    stats.over_budget += 1
                    leave_unjudged(entry, f"over --max-judge-calls {budget}")
                    advance(1)
                    continue
                chunk.append((entry, attempt))
                per_item.append(requests)
            flat = [r for requests in per_item for r in requests]
            results = judge.backend.answer_tolerant(flat) if flat else []
            calls["judge"] += len(flat)
            if flat and stats.judged == 0 and all(isinstance(r, FailedResult) for r in results):
                # Nothing has ever come back: the judge is down, not flaky. Stop loudly.
                raise BackendError(results[0].error)  # type: ignore[union-attr]
            stored, links, cursor = [], [], 0
            for (entry, attempt), requests in zip(chunk, per_item, strict=True):
                own = results[cursor : cursor + len(requests)]
                cursor += len(requests)
                failed = [r for r in own if isinstance(r, FailedResult)]
                if failed:
                    stats.failed_requests += 1
                    leave_unjudged(entry, failed[0].error)
                    advance(1)
                    continue
                verdict = judge.marked_verdict(entry.work, own)
                if verdict.get("failure") and verdict.get("retryable"):
                    if attempt < judge.retries:
                        stats.parse_retries += 1
                        queue.append((entry, attempt + 1))
                        continue
                    stats.parse_failures += 1
                verdict["attempts"] = attempt + 1
                stats.judged += 1
                stored.append((entry.key, to_jsonable(entry.work), verdict))
                for duplicate in duplicates[entry.key]:
                    verdicts[(duplicate.task, duplicate.sample_id)][duplicate.slot] = verdict
                    links.append(duplicate.link("verdict"))
                advance(1)
            store.put_verdicts(judge_hash, stored)
            store.put_links(run_id, links)
    return verdicts
