"""What benchmarks/train_step.py makes of its sides' results: median step time and tokens/s,
the target check (ours against each TRL mode) and the tables.

Pure functions of the result rows, apart from the workers and the command line.
"""

from __future__ import annotations

import statistics
from typing import Any

from reporting import busy_note, fmt, rich_table  # beside this script

SIDE_LABELS = {
    "ours": "ours",
    "trl-ref": "TRL ref-per-step",
    "trl-precomputed": "TRL precomputed",
}
TARGET_SPEEDUP = 1.5


def summarise(row: dict[str, Any]) -> None:
    """Median s/step and tokens/s from a worker's per-step lists."""
    times = row["step_s"]
    row["median_step_s"] = statistics.median(times)
    row["tokens_per_step"] = statistics.mean(row["tokens"]) if row["tokens"] else None
    row["tokens_per_s"] = sum(row["tokens"]) / sum(times) if times else None


def build_checks(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """ours vs each TRL mode: throughput ratio, memory, same tokens, loss agreement."""
    ours = rows.get("ours")
    checks = []
    for side in ("trl-ref", "trl-precomputed"):
        trl = rows.get(side)
        if not ours or not trl or ours["status"] != "ok" or trl["status"] != "ok":
            continue
        ratio = ours["tokens_per_s"] / trl["tokens_per_s"]
        losses = list(zip(ours["losses"], trl["losses"], strict=False))
        check = {
            "versus": side,
            "throughput_ratio": ratio,
            "step_time_ratio": trl["median_step_s"] / ours["median_step_s"],
            "ours_extra_peak_mib": ours["extra_peak_mib"],
            "trl_extra_peak_mib": trl["extra_peak_mib"],
            "ours_peak_mib": ours["peak_mib"],
            "trl_peak_mib": trl["peak_mib"],
            "same_tokens": ours["tokens"] == trl["tokens"],
            "max_abs_loss_diff": max((abs(a - b) for a, b in losses), default=None),
            "speed_met": ratio >= TARGET_SPEEDUP,
            "memory_met": ours["extra_peak_mib"] <= trl["extra_peak_mib"],
        }
        check["passed"] = check["speed_met"] and check["memory_met"]
        checks.append(check)
    return checks


def render_table(rows: list[dict[str, Any]], title: str) -> Any:
    columns = ["side", "model", "batch", "steps", "median s/step", "tokens/step", "tokens/s"]
    columns += ["extra peak MiB", "peak MiB", "setup s", "ours/this tok/s", "note"]
    ours = next((r for r in rows if r["side"] == "ours" and r["status"] == "ok"), None)
    cells = []
    for row in rows:
        ok = row["status"] == "ok"
        ratio = None
        if ok and ours is not None and row is not ours:
            ratio = ours["tokens_per_s"] / row["tokens_per_s"]
        note = busy_note(row) if ok else f"{row['status']}: {row.get('reason', '')}"
        cells.append(
            [
                SIDE_LABELS[row["side"]],
                row["model"],
                str(row["batch_size"]),
                str(row["steps"]),
                fmt(row.get("median_step_s"), ".3f") if ok else "-",
                fmt(row.get("tokens_per_step"), ".0f") if ok else "-",
                fmt(row.get("tokens_per_s"), ".0f") if ok else "-",
                fmt(row.get("extra_peak_mib"), ".1f") if ok else "-",
                fmt(row.get("peak_mib"), ".0f") if ok else "-",
                fmt(row.get("setup_s"), ".1f") if ok else "-",
                fmt(ratio, ".2f", "x"),
                note,
            ]
        )
    return rich_table(title, columns, cells, ("side", "model", "note"))


def render_phases(rows: list[dict[str, Any]]) -> Any:
    phases = ["prepare", "forward+loss", "backward+clip", "optimizer", "rest"]
    cells = [
        [SIDE_LABELS[row["side"]], *(fmt(row["phase_s"].get(p), ".3f") for p in phases)]
        for row in rows
        if row["status"] == "ok" and row.get("phase_s")
    ]
    title = "median seconds per phase of a timed step (CPU)"
    return rich_table(title, ["side", *phases], cells, ("side",))


def render_checks(checks: list[dict[str, Any]]) -> Any:
    title = f"target: ours >= {TARGET_SPEEDUP:g}x TRL tokens/s at no more extra peak memory"
    columns = ["versus", "tok/s ratio", "ours extra MiB", "TRL extra MiB", "same tokens"]
    columns += ["max |loss diff|", "speed", "memory", "result"]
    verdict = {True: "[green]met[/green]", False: "[red]not met[/red]"}
    cells = [
        [
            SIDE_LABELS[check["versus"]],
            f"{check['throughput_ratio']:.2f}x",
            f"{check['ours_extra_peak_mib']:.1f}",
            f"{check['trl_extra_peak_mib']:.1f}",
            "yes" if check["same_tokens"] else "NO",
            fmt(check["max_abs_loss_diff"], ".1e"),
            verdict[check["speed_met"]],
            verdict[check["memory_met"]],
            verdict[check["passed"]],
        ]
        for check in checks
    ]
    return rich_table(title, columns, cells, ("versus",))
