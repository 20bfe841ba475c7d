"""`evalharness pipeline CONFIG.yaml`: train, evaluate the result and its base, exit 1 if a gated
metric regresses; with `rounds:`, as many rounds of self-rewarding DPO, each one gated
"""

# `engine.pipeline` runs it (`engine.self_rewarding` the rounds); the gate is `compare`'s.

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness pipeline`."""
    parser.add_argument("config", help="YAML with train, evaluate, gate (and rounds) sections")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_pipeline(args: argparse.Namespace) -> int:
    from evalharness.engine.pipeline import run_pipeline

    report = run_pipeline(Path(args.config), progress=not args.quiet)
    if args.json:
        print(json.dumps(report))
    elif "rounds" in report:
        print_rounds(report)
    else:
        print(f"trained: {report['trained']['out']} ({report['trained']['steps']} steps)")
        print(f"base run {report['base_run']} · tuned run {report['tuned_run']}")
        print_gates(report["gates"])
    for warning in [] if args.json else report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0 if report["passed"] else 1


def print_rounds(report: dict[str, Any]) -> None:
    """One block per round: its pairs, training, run and gates; then the model it ended on."""
    print(f"base run {report['base_run']}")
    for entry in report["rounds"]:
        pairs = entry["pairs"]
        print(
            f"round {entry['round']}: {pairs['pairs']} pairs from {pairs['prompts']} prompts "
            f"(skipped: {pairs['ties']} tied, {pairs['unrated']} with under two ratings; "
            f"{pairs['unrated_answers']} answers unrated) · {entry['trained']['steps']} steps · "
            f"run {entry['run']}"
        )
        print_gates(entry["gates"], f"round {entry['round']}")
    if report["stopped"]:
        print(f"stopped: {report['stopped']}")
    print(f"final model: {report['final_model']}")


def print_gates(checks: list[dict[str, Any]], later: str = "tuned") -> None:
    """One line per gate: the earlier run's value (the base's, or a round's: `against`) and
    the `later` run's."""
    for check in checks:
        verdict = "pass" if check["passed"] else "FAIL"
        earlier = check.get("against") or "base"
        against = f" (vs {earlier})" if check.get("against") else ""
        if check["reason"]:
            print(f"  {verdict}  {check['metric']}{against}: {check['reason']}")
            continue
        print(
            f"  {verdict}  {check['metric']}{against}: {earlier} {check['base']:.4f} -> {later} "
            f"{check['tuned']:.4f} (worse by {check['worse_by']:+.4f}, allowed "
            f"{check['max_drop']}; "
            + (
                f"{check['test']} p={check['p_value']:.3g}, alpha {check['alpha']})"
                if check["p_value"] is not None
                else "no paired test)"
            )
        )
