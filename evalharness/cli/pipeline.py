"""`evalharness pipeline CONFIG.yaml`: train, evaluate the result and its base, exit 1 if a gated
metric regresses
"""

# `engine.pipeline` holds the steps; the gate is `compare`'s.

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness pipeline`."""
    parser.add_argument("config", help="YAML with train, evaluate and gate sections")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_pipeline(args: argparse.Namespace) -> int:
    from evalharness.engine.pipeline import run_pipeline

    report = run_pipeline(Path(args.config), progress=not args.quiet)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"trained: {report['trained']['out']} ({report['trained']['steps']} steps)")
        print(f"base run {report['base_run']} · tuned run {report['tuned_run']}")
        for warning in report["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        for check in report["gates"]:
            verdict = "pass" if check["passed"] else "FAIL"
            if check["reason"]:
                print(f"  {verdict}  {check['metric']}: {check['reason']}")
                continue
            print(
                f"  {verdict}  {check['metric']}: base {check['base']:.4f} -> tuned "
                f"{check['tuned']:.4f} (worse by {check['worse_by']:+.4f}, allowed "
                f"{check['max_drop']}; "
                + (
                    f"{check['test']} p={check['p_value']:.3g}, alpha {check['alpha']})"
                    if check["p_value"] is not None
                    else "no paired test)"
                )
            )
    return 0 if report["passed"] else 1
