"""`evalharness compare RUN_A RUN_B`: paired comparison of two runs (A = baseline, B = candidate);
exit 1 on regression

Deltas are B - A on the samples both runs scored, with paired tests (McNemar for 0/1 outcomes,
Wilcoxon signed-rank for ratings and numbers) and a bootstrap CI that resamples whole samples. With
--fail-if-worse, exits 1 when a gated metric (each task's headline metrics, or --metrics) is worse
in B by more than DELTA and the paired test is significant at --alpha.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from evalharness.errors import InputError

#: Changed samples printed per task in the text view (`--json` has them all).
SHOWN_SAMPLE_DIFFS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness compare`."""
    parser.add_argument("run_a", help="baseline run: id, unique prefix or 'latest'")
    parser.add_argument("run_b", help="candidate run: id, unique prefix or 'latest'")
    parser.add_argument("--store", default=None, help="run store (SQLite) path")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level")
    parser.add_argument(
        "--fail-if-worse",
        type=float,
        default=None,
        metavar="DELTA",
        help="exit 1 when a gated metric is significantly worse by more than DELTA "
        "(in the metric's own units: MT-Bench points, win-rate percent, rates 0-1)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="gated metrics, comma-separated TASK.METRIC (default: each task's headline ones)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="ignored, kept for older scripts: nothing in a comparison is random",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_compare(args: argparse.Namespace) -> int:
    from evalharness.stats.comparison import compare_runs
    from evalharness.store.run_store import open_store

    store = open_store(args.store, read_only=True)
    try:
        run_a = store.resolve_run(args.run_a)
        run_b = store.resolve_run(args.run_b)
        metrics = (
            [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
        )
        if metrics == []:
            raise InputError("--metrics names no metric")
        comparison = compare_runs(
            store,
            run_a,
            run_b,
            alpha=args.alpha,
            fail_if_worse=args.fail_if_worse,
            metrics=metrics,
        )
    finally:
        store.close()
    result = comparison.to_json()
    if args.json:
        print(json.dumps(result))
    else:
        print_comparison(result)
    return 0 if comparison.passed else 1


def print_comparison(result: dict[str, Any]) -> None:
    from rich.table import Table

    from evalharness.console import err_console, out_console
    from evalharness.stats.intervals import CI_METHODS

    for warning in result["warnings"]:
        err_console.print(f"[yellow]warning: {warning}[/yellow]", highlight=False)
    a, b = result["run_a"], result["run_b"]
    out_console.print(
        f"A (baseline) {a['run_id']} {a['model']} · B (candidate) {b['run_id']} {b['model']}",
        highlight=False,
    )
    for name, task in result["tasks"].items():
        table = Table(title=f"{name} ({task['n_shared']} shared samples)")
        for column in ("metric", "A", "B", "Δ B-A", f"{1 - result['alpha']:.0%} CI", "p", "test"):
            table.add_column(column, justify="left" if column in ("metric", "test") else "right")
        table.add_column("", justify="center")
        hidden = 0
        methods = sorted({row["ci_method"] for row in task["metrics"] if row.get("ci_method")})
        for row in task["metrics"]:
            if row["test"] is None and not row["gated"]:
                hidden += 1
                continue
            table.add_row(
                row["metric"] + (" *" if row["gated"] else ""),
                _number(row["a"]),
                _number(row["b"]),
                _number(row["delta"], signed=True),
                f"[{_number(row['ci'][0])}, {_number(row['ci'][1])}]" if row["ci"] else "",
                f"{row['p_value']:.3g}" if row["p_value"] is not None else "",
                _test_label(row) if row["test"] else "untested",
                _mark(row),
            )
        caption = [f"CI of Δ: {m} ({CI_METHODS.get(m, m)})" for m in methods]
        if hidden:
            caption.append(f"{hidden} more metrics have no paired test (see --json)")
        table.caption = "\n".join(caption) or None
        out_console.print(table)
        changed = task["samples"][:SHOWN_SAMPLE_DIFFS]
        if changed:
            listed = ", ".join(
                f"{d['sample_id']}{'/' + d['unit'] if d['unit'] else ''} "
                f"{_number(d['a'])}→{_number(d['b'])}"
                for d in changed
            )
            out_console.print(
                f"  {len(task['samples'])} changed on {task['sample_metric']}; largest: {listed}",
                highlight=False,
            )
    for name in result["only_in_a"] + result["only_in_b"]:
        err_console.print(f"[yellow]warning: {name} is scored in only one run[/yellow]")
    if result["fail_if_worse"] is not None:
        verdict = (
            "[green]passed[/green]"
            if result["passed"]
            else f"[red]regression: {', '.join(result['regressions'])}[/red]"
        )
        out_console.print(
            f"gate (* metrics, worse by > {result['fail_if_worse']} at p < {result['alpha']}): "
            + verdict
        )


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _test_label(row: dict[str, Any]) -> str:
    """The test and its n: the independent values it ran on (samples; a clustered test runs on
    fewer than the unit pairs)."""
    return f"{row['test']} n={row['n_samples'] or row['n_pairs']}"


def _mark(row: dict[str, Any]) -> str:
    """▲ significantly better, ▼ significantly worse, ✗ a gate failure, blank otherwise."""
    if row["regression"]:
        return "✗"
    if not row["significant"]:
        return ""
    return "▼" if (row["worse_by"] or 0.0) > 0 else "▲"
