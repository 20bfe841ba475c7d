"""What benchmarks/scoring.py makes of its rows: ratios to naive and achieved TFLOP/s, the CPU
memory check (chunked vs naive), the fused kernel's goals against its peers, and the tables.

Pure functions of the result rows (no torch), so the checks and goals can be tested on
hand-written rows.
"""

from __future__ import annotations

from typing import Any

from reporting import busy_note, fmt, rich_table, shape_cells  # beside this script

CHECK_MIN_V, CHECK_MIN_N, CHECK_FACTOR = 32000, 8192, 20
MIB = 1024**2


def add_derived(rows: list[dict[str, Any]], cuda: bool, peak_tflops: float | None) -> None:
    """Each row's extra peak relative to naive's at its shape and mode, its achieved TFLOP/s
    of the head matmul (2*N*D*V forward, 3x that with the backward) and their share of the
    card's peak."""
    by_key = {(r["path"], r["n"], r["d"], r["v"], r["mode"]): r for r in rows}
    for row in rows:
        naive = by_key.get(("naive", row["n"], row["d"], row["v"], row["mode"]))
        ratio = None
        naive_ok = naive is not None and naive["status"] == "ok"
        if row["status"] == "ok" and naive_ok and naive["extra_peak_mib"] > 0:
            ratio = row["extra_peak_mib"] / naive["extra_peak_mib"]
        row["peak_ratio_vs_naive"] = ratio
        row["tflops"] = row["frac_peak"] = None
        if row["status"] == "ok":
            flops = 2 * row["n"] * row["d"] * row["v"] * (3 if row["mode"] == "backward" else 1)
            row["tflops"] = flops / (row["time_ms"] / 1000) / 1e12
            if cuda and peak_tflops:
                row["frac_peak"] = row["tflops"] / peak_tflops


def build_checks(rows: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """chunked extra peak <= naive extra peak / 20 for CPU configs with V >= 32000, N >= 8192."""
    if device != "cpu":
        return []
    by_key = {(r["path"], r["n"], r["d"], r["v"], r["dtype"], r["mode"]): r for r in rows}
    checks = []
    for row in rows:
        if row["path"] != "chunked" or row["v"] < CHECK_MIN_V or row["n"] < CHECK_MIN_N:
            continue
        naive = by_key.get(("naive", row["n"], row["d"], row["v"], row["dtype"], row["mode"]))
        check: dict[str, Any] = {key: row[key] for key in ("n", "d", "v", "dtype", "mode")} | {
            "factor": CHECK_FACTOR,
            "chunked_extra_peak_mib": row.get("extra_peak_mib"),
        }
        if naive is not None and naive["status"] == "ok":
            check["naive_extra_peak_mib"] = naive["extra_peak_mib"]
            check["naive_basis"] = "measured"
        else:
            check["naive_extra_peak_mib"] = row["n"] * row["v"] * 4 / MIB
            check["naive_basis"] = "lower bound N*V*4 bytes (naive not measured)"
        if row["status"] != "ok":
            check["passed"] = None
            check["note"] = f"chunked {row['status']}: {row.get('reason', '')}"
        else:
            limit = check["naive_extra_peak_mib"] / CHECK_FACTOR
            check["limit_mib"] = limit
            check["passed"] = row["extra_peak_mib"] <= limit
        checks.append(check)
    return checks


def build_goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fused kernel against its peers per shape: forward time <= CCE's, forward + backward
    time <= CCE's and Liger's, forward + backward extra peak <= CCE's (CUDA rows only)."""
    by_key = {(r["path"], r["n"], r["d"], r["v"], r["mode"]): r for r in rows}

    def ok(path: str, n: int, d: int, v: int, mode: str) -> dict[str, Any] | None:
        row = by_key.get((path, n, d, v, mode))
        return row if row is not None and row["status"] == "ok" else None

    goals = []
    shapes = sorted({(r["n"], r["d"], r["v"]) for r in rows if r["path"] == "triton"})
    for n, d, v in shapes:
        wanted = [
            ("forward", "time_ms", "cce"),
            ("backward", "time_ms", "cce"),
            ("backward", "time_ms", "liger"),
            ("backward", "extra_peak_mib", "cce"),
        ]
        for mode, measure, peer in wanted:
            ours, theirs = ok("triton", n, d, v, mode), ok(peer, n, d, v, mode)
            goal: dict[str, Any] = {"n": n, "d": d, "v": v, "mode": mode, "measure": measure}
            goal |= {"peer": peer, "ours": None, "theirs": None, "passed": None}
            if ours is not None and theirs is not None:
                goal |= {"ours": ours[measure], "theirs": theirs[measure]}
                goal["passed"] = ours[measure] <= theirs[measure]
            goals.append(goal)
    return goals


def render_goals(goals: list[dict[str, Any]]) -> Any:
    verdict = {True: "[green]met[/green]", False: "[red]MISSED[/red]", None: "n/a"}
    columns = ("N", "D", "V", "mode", "measure", "peer", "triton", "peer's", "result")
    cells = (
        [
            *shape_cells(goal, "n", "d", "v", "mode", "measure", "peer"),
            fmt(goal["ours"], ".1f"),
            fmt(goal["theirs"], ".1f"),
            verdict[goal["passed"]],
        ]
        for goal in goals
    )
    return rich_table("goals: fused kernel (triton) vs its peers", columns, cells)


def render_table(rows: list[dict[str, Any]], title: str, cuda: bool) -> Any:
    columns = ["path", "N", "D", "V", "dtype", "mode", "time ms", "extra peak MiB", "vs naive"]
    columns += ["max abs err"] + (["TFLOP/s", "% peak"] if cuda else []) + ["note"]
    return rich_table(title, columns, (row_cells(row, cuda) for row in rows), ("path", "note"))


def row_cells(row: dict[str, Any], cuda: bool) -> list[str]:
    ok = row["status"] == "ok"
    errors = fmt(row.get("max_abs_err"), ".1e")
    if row.get("max_abs_err_grad_hidden") is not None:
        errors += f" / dh {row['max_abs_err_grad_hidden']:.1e}"
    if row.get("max_abs_err_grad_weight") is not None:
        errors += f" / dW {row['max_abs_err_grad_weight']:.1e}"
    cells = [
        *shape_cells(row, "path", "n", "d", "v", "dtype", "mode"),
        fmt(row.get("time_ms"), ".1f") if ok else "-",
        fmt(row.get("extra_peak_mib"), ".1f") if ok else "-",
        fmt(row.get("peak_ratio_vs_naive"), ".3g", "x"),
        errors if ok else "-",
    ]
    if cuda:
        cells += [
            fmt(row.get("tflops"), ".1f"),
            fmt(None if row.get("frac_peak") is None else row["frac_peak"] * 100, ".1f", "%"),
        ]
    cells.append(busy_note(row) if ok else row.get("reason", ""))
    return cells


def render_checks(checks: list[dict[str, Any]]) -> Any:
    verdict = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "n/a"}
    columns = ("N", "D", "V", "dtype", "mode", "chunked MiB", "naive MiB", "limit", "result")
    cells = []
    for check in checks:
        naive = fmt(check["naive_extra_peak_mib"], ".1f")
        if check["naive_basis"] != "measured":
            naive += " (lower bound)"
        cells.append(
            [
                *shape_cells(check, "n", "d", "v", "dtype", "mode"),
                fmt(check.get("chunked_extra_peak_mib"), ".1f"),
                naive,
                fmt(check.get("limit_mib"), ".1f"),
                verdict[check["passed"]],
            ]
        )
    title = f"check: chunked extra peak <= naive extra peak / {CHECK_FACTOR}"
    return rich_table(title, columns, cells)
