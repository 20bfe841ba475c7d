"""Judging throughput over HTTP: one judge request at a time versus many in flight.

Why it exists
    An API judge spends nearly all of its time waiting on the network, not computing, so
    judging a whole benchmark one request after another is as slow as the sum of the
    latencies. `--judge-concurrency` keeps several requests in flight; this benchmark checks
    that it really does, through the product's own path, and that a re-run with the same
    store answers from its cache without calling the judge at all.

Run from the repository root::

    python benchmarks/judging.py [--n-items 200] [--concurrency 32] [--latency-s 0.05]

What is timed
    A scripted OpenAI-compatible judge (`evalharness.testing.judge_server`) serves on
    127.0.0.1 from its own process (as a remote API would: it must not share this process's
    interpreter lock) and sleeps `--latency-s` before every answer. The script writes
    `--n-items` synthetic AlpacaEval items (instruction, reference output, model output; the
    two outputs always differ, so every item needs the judge) into a temporary directory, then
    calls `evalharness.cli.main(["import", "alpaca-eval", ..., "--judge",
    "openai:scripted-judge", "--judge-mode", "text", "--json"])` in-process -- argument
    parsing, the run store, the openai backend and its HTTP client, verdict parsing and
    metrics -- once with judge concurrency 1 and once with `--concurrency`, each into a fresh
    SQLite store so nothing is cached. Each run must report exactly one judge call per item
    (one order per item is the default). The command is then run again on the concurrent
    run's store, which must make no judge call; its time is reported as the cached re-run.
    The CLI modules are imported, and one small untimed run is made, before any timing, so
    import and first-use costs stay out of the numbers.

Target
    Concurrent judging at least 8x faster than sequential. With 50 ms of latency, 200
    sequential judgments take at least 10 s; 32 in flight could in principle take ~0.35 s,
    so the target leaves room for the client's own overhead.

Output
    A table on stdout and JSON at `--out` (default `benchmarks/results/judging.json`) with one
    row per measurement, the latency setting, the speed-up, whether the target is met, and
    platform facts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from measure import machine_info  # beside this script
from reporting import write_json
from rich.console import Console
from rich.table import Table

from evalharness.testing.judge_server import MODEL_NAME

SERVER_START_TIMEOUT_S = 30.0

DEFAULT_OUT = Path("benchmarks/results/judging.json")
TARGET_SPEEDUP = 8.0
WARMUP_ITEMS = 4
SENTENCES = (
    "It is sturdy and easy to carry.",
    "Most people use it every day without noticing.",
    "Its colour fades slowly in the sun.",
    "A careful owner can keep it working for years.",
    "It was first made by hand, and later in factories.",
)


def write_items(directory: Path, n_items: int) -> tuple[Path, Path]:
    """A reference file and a model-outputs file (AlpacaEval `model_outputs.json` format).

    Outputs vary in length with the index, and the model's output is never equal to the
    reference (an identical pair is a tie without asking the judge), so every item is judged.
    """
    reference, outputs = [], []
    for i in range(n_items):
        instruction = f"Instruction {i}: describe item {i}"
        body = " ".join(SENTENCES[: 1 + i % len(SENTENCES)])
        reference.append(
            {
                "instruction": instruction,
                "output": f"Item {i} is a common object. {body}",
                "generator": "reference-model",
                "dataset": "synthetic",
            }
        )
        extra = " ".join(SENTENCES[: 1 + (i * 3) % len(SENTENCES)])
        outputs.append(
            {
                "instruction": instruction,
                "output": f"Here is a description of item {i}. {extra} That is all about it.",
                "generator": "candidate-model",
                "dataset": "synthetic",
            }
        )
    for ref, out in zip(reference, outputs, strict=True):
        assert ref["output"] != out["output"], "outputs must differ for the judge to be asked"
    ref_path = directory / "reference_outputs.json"
    out_path = directory / "model_outputs.json"
    ref_path.write_text(json.dumps(reference, indent=1))
    out_path.write_text(json.dumps(outputs, indent=1))
    return ref_path, out_path


def run_import(
    outputs: Path, reference: Path, base_url: str, concurrency: int, store: Path
) -> tuple[dict[str, Any], float]:
    """`evalharness import alpaca-eval ... --json` in-process; its parsed result and seconds."""
    from evalharness.cli import main as cli_main

    argv = [
        "import",
        "alpaca-eval",
        "--outputs",
        str(outputs),
        "--reference",
        str(reference),
        "--judge",
        f"openai:{MODEL_NAME}",
        "--judge-base-url",
        base_url,
        "--judge-concurrency",
        str(concurrency),
        "--judge-mode",
        "text",
        "--store",
        str(store),
        "--json",
        "--no-progress",
    ]
    captured = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(captured):
        code = cli_main(argv)
    seconds = time.perf_counter() - start
    text = captured.getvalue()
    if code != 0:
        raise SystemExit(f"evalharness {' '.join(argv)} exited {code}; stdout:\n{text}")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"evalharness {' '.join(argv)} printed nothing on stdout")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--json output is not one JSON object ({exc}):\n{text}") from exc
    return result, seconds


def measure(
    mode: str,
    concurrency: int,
    expected_calls: int,
    paths: tuple[Path, Path],
    base_url: str,
    store: Path,
) -> dict[str, Any]:
    """One timed import; checks the judge-call count and returns a result row."""
    reference, outputs = paths
    result, seconds = run_import(outputs, reference, base_url, concurrency, store)
    judge_calls = result["calls_made"]["judge"]
    if judge_calls != expected_calls:  # not `assert`: the check must survive python -O
        raise AssertionError(
            f"{mode}: expected {expected_calls} judge calls, the run reported {judge_calls}"
        )
    if result["status"] != "complete":
        raise SystemExit(f"{mode}: run status {result['status']!r}, judging {result['judging']}")
    judging = result["judging"]
    judgments = int(judging.get("items", 0))
    return {
        "mode": mode,
        "concurrency": concurrency,
        "judgments": judgments,
        "judge_calls": judge_calls,
        "seconds": round(seconds, 3),
        "judgments_per_s": round(judgments / seconds, 1) if seconds > 0 else None,
        "speedup": None,
        "run_seconds_reported": result["seconds"],
        "judging": judging,
    }


def render_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = ("mode", "concurrency", "judgments", "judge calls", "seconds", "judgments/s")
    for column in (*columns, "speedup"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for row in rows:
        table.add_row(
            row["mode"],
            str(row["concurrency"]),
            str(row["judgments"]),
            str(row["judge_calls"]),
            f"{row['seconds']:.2f}",
            "-" if row["judgments_per_s"] is None else f"{row['judgments_per_s']:.1f}",
            "-" if row["speedup"] is None else f"{row['speedup']:.2f}x",
        )
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n-items", type=int, default=200, help="pairwise judgments per run")
    parser.add_argument("--concurrency", type=int, default=32, help="judge concurrency to test")
    parser.add_argument("--latency-s", type=float, default=0.05, help="judge latency per request")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.n_items < 1 or args.concurrency < 1 or args.latency_s < 0:
        parser.error("--n-items and --concurrency must be at least 1, --latency-s at least 0")
    return args


@contextlib.contextmanager
def judge_server_process(latency_s: float) -> Iterator[str]:
    """The scripted judge in a subprocess on a free port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "evalharness.testing.judge_server"]
    command += ["--port", str(port), "--latency-s", str(latency_s)]
    process = subprocess.Popen(command)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{root}/health", timeout=1.0).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the scripted judge server did not start")
            time.sleep(0.05)
        yield f"{root}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=max(110, Console().width))  # 80 when piped: too narrow for the table
    import evalharness.cli  # noqa: F401 -- warm-up: import cost is not part of the timings

    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="judging-")))
        base_url = stack.enter_context(judge_server_process(args.latency_s))
        paths = write_items(directory, args.n_items)
        warm_dir = directory / "warmup"
        warm_dir.mkdir()
        warm_paths = write_items(warm_dir, WARMUP_ITEMS)
        # Untimed warm-up run: loads the task, backend and HTTP client code paths once.
        measure("warm-up", 1, WARMUP_ITEMS, warm_paths, base_url, warm_dir / "store.sqlite")

        rows: list[dict[str, Any]] = []
        console.print(f"sequential: {args.n_items} judgments, concurrency 1 ...")
        rows.append(
            measure("sequential", 1, args.n_items, paths, base_url, directory / "seq.sqlite")
        )
        console.print(f"concurrent: {args.n_items} judgments, concurrency {args.concurrency} ...")
        concurrent_store = directory / "concurrent.sqlite"
        rows.append(
            measure("concurrent", args.concurrency, args.n_items, paths, base_url, concurrent_store)
        )
        console.print("re-run on the concurrent run's store (everything cached) ...")
        cached = measure("cached re-run", args.concurrency, 0, paths, base_url, concurrent_store)
        rows.append(cached)

    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = round(base / row["seconds"], 2) if row["seconds"] > 0 else None
        # The latency alone: ceil(calls / concurrency) waves of one latency each.
        waves = -(-row["judge_calls"] // row["concurrency"])
        row["latency_floor_s"] = round(waves * args.latency_s, 3)
    sequential = rows[0]
    overhead_ms = (sequential["seconds"] / sequential["judge_calls"] - args.latency_s) * 1000
    speedup = rows[1]["speedup"] or 0.0
    met = speedup >= TARGET_SPEEDUP

    title = (
        f"Pairwise judging over HTTP: {args.n_items} items, scripted judge, "
        f"{args.latency_s * 1000:g} ms latency per request"
    )
    console.print(render_table(rows, title))
    verdict = "[green]met[/green]" if met else "[red]NOT met[/red]"
    console.print(
        f"sequential: {overhead_ms:.1f} ms per judgment on top of the "
        f"{args.latency_s * 1000:g} ms latency (floor {sequential['latency_floor_s']:.2f} s)"
    )
    console.print(
        f"concurrent (x{args.concurrency}) vs sequential: {speedup:.2f}x speed-up; "
        f"target >= {TARGET_SPEEDUP:g}x {verdict}"
    )
    report = {
        "benchmark": "judging",
        "n_items": args.n_items,
        "latency_s": args.latency_s,
        "judge": f"openai:{MODEL_NAME}",
        "judge_mode": "text",
        "target_speedup": TARGET_SPEEDUP,
        "speedup": speedup,
        "target_met": met,
        "sequential_overhead_ms_per_judgment": round(overhead_ms, 1),
        "results": rows,
        "machine": machine_info(),
    }
    write_json(args.out, report)
    console.print(f"wrote {args.out}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
