"""Commands over judges' verdicts: `judge` (outputs produced elsewhere), `agreement` (judge vs
judge or human labels) and `drift` (safety drift of a fine-tune against its base)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalharness.backends.devices import DEVICE_HELP
from evalharness.errors import InputError


def add_verdict_parsers(commands: Any) -> None:
    drift = commands.add_parser(
        "drift", help="safety drift of a fine-tune against its base (driftcaps runs)"
    )
    drift.add_argument("--base", required=True, help="run id of the base model")
    drift.add_argument("--tuned", required=True, help="run id of the fine-tuned model")
    drift.add_argument(
        "--reference", default=None, help="run id of a plain-LoRA fine-tune: adds mitigation"
    )
    drift.add_argument("--task", default="driftcaps")
    drift.add_argument("--store", default=None)
    drift.add_argument("--json", action="store_true")

    judge = commands.add_parser(
        "judge", help="judge completions produced elsewhere (refusal verdicts)"
    )
    judge.add_argument(
        "--judge",
        required=True,
        help="refusal-rules, refusal-regex:PATTERN, rules:FILE.yaml, clf:MODEL, or an LLM spec",
    )
    judge.add_argument("--input", required=True, help="CSV or JSONL with id, prompt, completion")
    judge.add_argument("--judge-mode", default="auto")
    judge.add_argument("--judge-base-url", default=None)
    judge.add_argument("--judge-api-key-env", default=None, metavar="NAME")
    judge.add_argument(
        "--judge-device",
        "--device",
        default=None,
        help=f"where a judge that is a local model (hf:, clf:) runs: {DEVICE_HELP}; default auto",
    )
    judge.add_argument("--json", action="store_true", help="one JSON object per row")

    agree = commands.add_parser(
        "agreement",
        help="agreement between two runs' judges, or a run's judge and human labels",
    )
    agree.add_argument("run_a", help="run id (or prefix)")
    agree.add_argument("run_b", nargs="?", default=None, help="second run id")
    agree.add_argument("--labels", default=None, help="JSONL/CSV: sample_id, slot, label")
    agree.add_argument("--task", default=None, help="task (default: the only one in run_a)")
    agree.add_argument("--store", default=None)
    agree.add_argument("--json", action="store_true")


def open_store(path: str | None):  # noqa: ANN201 - RunStore, imported lazily
    """`agreement` and `drift` only read stored verdicts: a read-only store will do."""
    from evalharness.store.run_store import open_store as open_run_store

    return open_run_store(path, read_only=True)


def cmd_agreement(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalharness.formats.records import UniqueIds, read_records, require
    from evalharness.stats.agreement import agreement

    store = open_store(args.store)
    try:
        run_a = store.resolve_run(args.run_a)
        tasks = [t["task"] for t in store.get_tasks(run_a)]
        task = args.task or (tasks[0] if len(tasks) == 1 else None)
        if task is None or task not in tasks:
            raise InputError(f"run {run_a} has tasks {', '.join(tasks)}: pick one with --task")
        labels_a = {k: verdict_label(v) for k, v in store.get_run_verdicts(run_a, task).items()}
        if args.labels:
            labels_b = {}
            keys = UniqueIds()
            for where, row in read_records(Path(args.labels), "--labels"):
                key = (str(require(where, row, "sample_id")), str(row.get("slot") or ""))
                keys.add(where, key, described=f"sample_id {key[0]!r} slot {key[1]!r}")
                labels_b[key] = str(require(where, row, "label"))
            # A label file without slots matches a task with one verdict per sample.
            if all(slot == "" for _, slot in labels_b):
                labels_a = {(sid, ""): label for (sid, _), label in labels_a.items()}
            other = args.labels
        elif args.run_b:
            run_b = store.resolve_run(args.run_b)
            found = store.get_run_verdicts(run_b, task).items()
            labels_b = {k: verdict_label(v) for k, v in found}
            other = run_b
        else:
            raise InputError("give a second run id or --labels FILE")
    finally:
        store.close()
    keys = sorted(set(labels_a) & set(labels_b))
    if not keys:
        raise InputError(f"run {run_a} and {other} share no judged items of task {task}")
    result = agreement([labels_a[k] for k in keys], [labels_b[k] for k in keys])
    result = {"task": task, "a": run_a, "b": other, **result}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}\t{value if not isinstance(value, float) else round(value, 4)}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from evalharness.console import err_console
    from evalharness.tasks.driftcaps.drift import compute_drift, mitigation

    store = open_store(args.store)
    try:
        runs = {}
        for role in ("base", "tuned", "reference"):
            run_id = getattr(args, role)
            if run_id is None:
                continue
            resolved = store.resolve_run(run_id)
            samples = store.get_samples(resolved, args.task)
            if not samples:
                raise InputError(f"run {resolved} has no {args.task} results")
            info = next(t["info"] for t in store.get_tasks(resolved) if t["task"] == args.task)
            runs[role] = (resolved, {s["sample_id"]: s["scores"] or {} for s in samples}, info)
    finally:
        store.close()
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
        reference = compute_drift(runs["base"][1], runs["reference"][1])
        result["reference"] = runs["reference"][0]
        result["mitigation"] = mitigation(
            reference.get("delta_unsafe_refusal_rate", 0.0),
            result.get("delta_unsafe_refusal_rate", 0.0),
        )
    result["warnings"] = warnings
    if args.json:
        print(json.dumps(result))
    else:
        for warning in warnings:
            err_console.print(f"[yellow]warning: {warning}[/yellow]")
        _print_drift(result)
    return 0


def _print_drift(result: dict[str, Any]) -> None:
    from rich.table import Table

    from evalharness.console import out_console

    table = Table(
        title=f"drift {result['base']} → {result['tuned']} ({result['n_paired']} prompts)"
    )
    for column in ("prompts", "n", "base", "tuned", "Δ", "kept", "lost", "gained", "McNemar p"):
        table.add_column(column)
    for label, meaning in (("unsafe", "refused"), ("safe", "complied")):
        entry = result.get(label)
        if entry:
            table.add_row(
                f"{label} ({meaning})",
                str(entry["n"]),
                f"{entry['base_rate']:.3f}",
                f"{entry['tuned_rate']:.3f}",
                f"{entry['base_rate'] - entry['tuned_rate']:+.3f}",
                str(entry["table"]["kept"]),
                str(entry["table"]["lost"]),
                str(entry["table"]["gained"]),
                f"{entry['mcnemar_p']:.4g}",
            )
    out_console.print(table)
    if result.get("mitigation") is not None:
        out_console.print(f"mitigation against {result['reference']}: {result['mitigation']:.3f}")


def cmd_judge(args: argparse.Namespace) -> int:
    """Refusal verdicts for completions produced elsewhere, one line per row, in file order."""
    from pathlib import Path

    from evalharness.formats.records import read_records, require
    from evalharness.judges.factory import build_judge
    from evalharness.tasks.base import JudgeItem

    records = read_records(Path(args.input), "--input")  # input errors before a judge loads
    judge = build_judge(
        args.judge,
        mode=args.judge_mode,
        base_url=args.judge_base_url,
        api_key_env=args.judge_api_key_env,
        device=args.judge_device,
    )
    judge.check_protocol("refusal")
    rows = []
    for where, row in records:
        fields = {
            "prompt": str(require(where, row, "prompt")),
            "text": str(require(where, row, "completion")),
        }
        rows.append((str(require(where, row, "id")), JudgeItem("refusal", "refusal", fields)))
    truncated = 0
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        verdicts = _judge_items(judge, [item for _, item in chunk])
        for (row_id, _), verdict in zip(chunk, verdicts, strict=True):
            out = {"id": row_id, "verdict": verdict.get("label")}
            if verdict.get("failure"):
                out["error"] = verdict.get("error")
            if verdict.get("truncated"):
                out["truncated"] = True  # the completion was cut to fit the judge's context
                truncated += 1
            print(json.dumps(out) if args.json else f"{row_id}\t{out['verdict']}")
    if truncated:
        print(
            f"evalharness: warning: {truncated} of {len(rows)} rows were longer than the "
            "judge model's context and were cut to fit",
            file=sys.stderr,
        )
    return 0


def _judge_items(judge: Any, items: list[Any]) -> list[dict[str, Any]]:
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
