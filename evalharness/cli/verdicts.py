"""Commands over judges' verdicts: `judge` (outputs produced elsewhere), `agreement` (judge vs
judge or human labels) and `drift` (safety drift of a fine-tune against its base).

The work is `engine.verdicts`'; here are the flags and the printed tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evalharness.backends.devices import DEVICE_HELP


def add_drift_arguments(drift: argparse.ArgumentParser) -> None:
    """`evalharness drift`: safety drift of a fine-tune against its base (driftcaps runs)"""
    drift.add_argument("--base", required=True, help="run id of the base model")
    drift.add_argument("--tuned", required=True, help="run id of the fine-tuned model")
    drift.add_argument(
        "--reference", default=None, help="run id of a plain-LoRA fine-tune: adds mitigation"
    )
    drift.add_argument("--task", default="driftcaps")
    drift.add_argument("--store", default=None)
    drift.add_argument("--json", action="store_true")


def add_judge_arguments(judge: argparse.ArgumentParser) -> None:
    """`evalharness judge`: judge completions produced elsewhere (refusal verdicts)"""
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


def add_agreement_arguments(agree: argparse.ArgumentParser) -> None:
    """`evalharness agreement`: agreement between two runs' judges, or a run's judge and human
    labels"""
    agree.add_argument("run_a", help="run id (or prefix)")
    agree.add_argument("run_b", nargs="?", default=None, help="second run id")
    agree.add_argument("--labels", default=None, help="JSONL/CSV: sample_id, slot, label")
    agree.add_argument("--task", default=None, help="task (default: the only one in run_a)")
    agree.add_argument("--store", default=None)
    agree.add_argument("--json", action="store_true")


#: The commands this module declares, in the order `evalharness --help` lists them.
SUBCOMMANDS = (add_drift_arguments, add_judge_arguments, add_agreement_arguments)


def open_store(path: str | None):  # noqa: ANN201 - RunStore, imported lazily
    """`agreement` and `drift` only read stored verdicts: a read-only store will do."""
    from evalharness.store.run_store import open_store as open_run_store

    return open_run_store(path, read_only=True)


def cmd_agreement(args: argparse.Namespace) -> int:
    from evalharness.engine.verdicts import agreement_report

    store = open_store(args.store)
    try:
        result = agreement_report(store, args.run_a, args.run_b, labels=args.labels, task=args.task)
    finally:
        store.close()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}\t{value if not isinstance(value, float) else round(value, 4)}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from evalharness.console import err_console
    from evalharness.engine.verdicts import drift_report

    store = open_store(args.store)
    try:
        result = drift_report(store, args.base, args.tuned, args.reference, task=args.task)
    finally:
        store.close()
    if args.json:
        print(json.dumps(result))
    else:
        for warning in result["warnings"]:
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
    from evalharness.engine.verdicts import completion_items, judge_completions
    from evalharness.formats.records import read_records
    from evalharness.judges.factory import build_judge

    records = read_records(Path(args.input), "--input")  # input errors before a judge loads
    judge = build_judge(
        args.judge,
        mode=args.judge_mode,
        base_url=args.judge_base_url,
        api_key_env=args.judge_api_key_env,
        device=args.judge_device,
    )
    judge.check_protocol("refusal")
    rows = completion_items(records)
    truncated = 0
    for out in judge_completions(judge, rows):
        truncated += bool(out.get("truncated"))
        print(json.dumps(out) if args.json else f"{out['id']}\t{out['verdict']}")
    if truncated:
        print(
            f"evalharness: warning: {truncated} of {len(rows)} rows were longer than the "
            "judge model's context and were cut to fit",
            file=sys.stderr,
        )
    return 0
