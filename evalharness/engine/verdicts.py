"""Verdicts outside a run: judging completions made elsewhere, judge agreement, safety drift.

- `judge_completions`: refusal verdicts for a file of completions, asking a judge again (up to
  its retries) when a verdict does not parse, as the engine does inside a run.
- `agreement_report`: how often a run's judge agrees with another run's judge, or with human
  labels, on the items both judged (`stats.agreement`).
- `drift_report`: how a fine-tune's refusals moved against its base's, prompt by prompt
  (`tasks.driftcaps.drift`), with a plain-LoRA reference for mitigation.

Stored runs are read from a store the caller opened (read-only will do).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalharness.errors import InputError

#: Completions judged per judge call in `judge_completions`.
JUDGE_CHUNK = 64


def completion_items(records: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """`(id, refusal JudgeItem)` per record of id, prompt and completion (`read_records`)."""
    from evalharness.formats.records import require
    from evalharness.tasks.base import JudgeItem

    rows = []
    for where, row in records:
        fields = {
            "prompt": str(require(where, row, "prompt")),
            "text": str(require(where, row, "completion")),
        }
        rows.append((str(require(where, row, "id")), JudgeItem("refusal", "refusal", fields)))
    return rows


def judge_completions(judge: Any, rows: list[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
    """One result per row, in order: `id`, `verdict`, and `error` / `truncated` when so."""
    for start in range(0, len(rows), JUDGE_CHUNK):
        chunk = rows[start : start + JUDGE_CHUNK]
        verdicts = judge_items(judge, [item for _, item in chunk])
        for (row_id, _), verdict in zip(chunk, verdicts, strict=True):
            out = {"id": row_id, "verdict": verdict.get("label")}
            if verdict.get("failure"):
                out["error"] = verdict.get("error")
            if verdict.get("truncated"):
                out["truncated"] = True  # the completion was cut to fit the judge's context
            yield out


def judge_items(judge: Any, items: list[Any]) -> list[dict[str, Any]]:
    """Verdicts for items, asking again (up to the judge's retries) when one does not parse."""
    verdicts: list[dict[str, Any]] = [{} for _ in items]
    pending = list(range(len(items)))
    for attempt in range(judge.retries + 1):
        requests = [judge.requests_for(items[i], attempt) for i in pending]
        flat = [r for group in requests for r in group]
        results = judge.backend.answer(flat) if flat else []
        cursor, retry = 0, []
        for index, group in zip(pending, requests, strict=True):
            own = results[cursor : cursor + len(group)]
            verdicts[index] = judge.marked_verdict(items[index], own)
            cursor += len(group)
            if verdicts[index].get("failure") and verdicts[index].get("retryable"):
                retry.append(index)
        pending = retry
        if not pending:
            break
    return verdicts


def verdict_label(verdict: dict[str, Any]) -> Any:
    """A categorical label for agreement: the pairwise winner, a rule label, or a rating."""
    if verdict.get("failure"):
        return None
    for field in ("winner", "label"):
        if verdict.get(field) is not None:
            return verdict[field]
    rating = verdict.get("rating")
    return round(rating) if isinstance(rating, (int, float)) and rating >= 0 else None


def read_labels(path: Path) -> dict[tuple[str, str], str]:
    """Human labels by `(sample_id, slot)` from a JSONL/CSV file; a key twice is an error."""
    from evalharness.formats.records import UniqueIds, read_records, require

    labels = {}
    keys = UniqueIds()
    for where, row in read_records(path, "--labels"):
        key = (str(require(where, row, "sample_id")), str(row.get("slot") or ""))
        keys.add(where, key, described=f"sample_id {key[0]!r} slot {key[1]!r}")
        labels[key] = str(require(where, row, "label"))
    return labels


def agreement_report(
    store: Any,
    run_a: str,
    run_b: str | None = None,
    *,
    labels: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Agreement of run A's verdicts with run B's or with the labels file, on shared items."""
    from evalharness.stats.agreement import agreement

    run_a = store.resolve_run(run_a)
    tasks = [t["task"] for t in store.get_tasks(run_a)]
    task = task or (tasks[0] if len(tasks) == 1 else None)
    if task is None or task not in tasks:
        raise InputError(f"run {run_a} has tasks {', '.join(tasks)}: pick one with --task")
    labels_a = {k: verdict_label(v) for k, v in store.get_run_verdicts(run_a, task).items()}
    if labels:
        labels_b = read_labels(Path(labels))
        # A label file without slots matches a task with one verdict per sample.
        if all(slot == "" for _, slot in labels_b):
            labels_a = {(sid, ""): label for (sid, _), label in labels_a.items()}
        other = labels
    elif run_b:
        other = store.resolve_run(run_b)
        found = store.get_run_verdicts(other, task).items()
        labels_b = {k: verdict_label(v) for k, v in found}
    else:
        raise InputError("give a second run id or --labels FILE")
    keys = sorted(set(labels_a) & set(labels_b))
    if not keys:
        raise InputError(f"run {run_a} and {other} share no judged items of task {task}")
    result = agreement([labels_a[k] for k in keys], [labels_b[k] for k in keys])
    return {"task": task, "a": run_a, "b": other, **result}


def drift_report(
    store: Any, base: str, tuned: str, reference: str | None = None, *, task: str = "driftcaps"
) -> dict[str, Any]:
    """Drift of the tuned run against the base; warnings where their data or judge differ."""
    from evalharness.tasks.driftcaps.drift import compute_drift, mitigation

    runs = {}
    for role, run_id in (("base", base), ("tuned", tuned), ("reference", reference)):
        if run_id is None:
            continue
        resolved = store.resolve_run(run_id)
        samples = store.get_samples(resolved, task)
        if not samples:
            raise InputError(f"run {resolved} has no {task} results")
        info = next(t["info"] for t in store.get_tasks(resolved) if t["task"] == task)
        runs[role] = (resolved, {s["sample_id"]: s["scores"] or {} for s in samples}, info)
    result = {
        "base": runs["base"][0],
        "tuned": runs["tuned"][0],
        **compute_drift(runs["base"][1], runs["tuned"][1]),
    }
    warnings = [
        f"{role} run differs from the base in {field}"
        for role in ("tuned", "reference")
        if role in runs
        for field in ("data_hash", "judge_hash")
        if runs[role][2].get(field) != runs["base"][2].get(field)
    ]
    if "reference" in runs:
        drift = compute_drift(runs["base"][1], runs["reference"][1])
        result["reference"] = runs["reference"][0]
        result["mitigation"] = mitigation(
            drift.get("delta_unsafe_refusal_rate", 0.0),
            result.get("delta_unsafe_refusal_rate", 0.0),
        )
    result["warnings"] = warnings
    return result
