"""`evalharness.evaluate` on a model in memory: CPU against an accelerator, same numbers.

What a training loop's `EvalCallback` does every N steps: a Llama-shaped model (random weights,
the tiny test tokenizer) is evaluated on MT-Bench's built-in questions, judging itself, first on
the CPU and then moved to `--device`. The table gives the wall time of each and the largest
difference between their metrics (the CUDA path must agree with the CPU one).

    python benchmarks/evaluate_in_memory.py --device cuda --layers 8 --hidden 1024
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from random_llama import add_size_args, random_llama  # noqa: E402 - beside this script
from reporting import write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    add_size_args(parser)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "evaluate_in_memory.json"))
    args = parser.parse_args()

    import evalharness

    model, tokenizer = random_llama(args.layers, args.hidden, initializer_range=0.2)
    options = {"mt_bench": {"data": "builtin", "max_new_tokens": str(args.new_tokens)}}
    rows = []
    metrics = {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in ("cpu", args.device):
            model.to(device)
            started = time.perf_counter()
            results = evalharness.evaluate(
                model,
                "mt_bench",
                tokenizer=tokenizer,
                limit=args.limit,
                store=Path(tmp) / f"{device}.sqlite",
                task_options=options,
            )
            seconds = time.perf_counter() - started
            metrics[device] = results.metrics["mt_bench"]
            calls = results.raw["calls_made"]
            rows.append({"device": device, "seconds": round(seconds, 2), **calls})
    shared = [k for k, v in metrics["cpu"].items() if isinstance(v, (int, float))]
    gap = max(abs(metrics["cpu"][k] - metrics[args.device][k]) for k in shared)
    print(f"evaluate in memory: {vars(args)}")
    print(f"{'device':8} {'seconds':>8} {'model calls':>12} {'judge calls':>12}")
    for r in rows:
        print(f"{r['device']:8} {r['seconds']:>8.2f} {r['model']:>12} {r['judge']:>12}")
    print(f"largest metric difference cpu vs {args.device}: {gap:.2e}")
    cpu_score, other_score = metrics["cpu"]["score"], metrics[args.device]["score"]
    print(f"score: cpu {cpu_score:.4f}, {args.device} {other_score:.4f}")
    setup = {k: v for k, v in vars(args).items() if k != "json"}
    record = {"setup": setup, "rows": rows, "max_metric_difference": gap, "metrics": metrics}
    write_json(Path(args.json), record)


if __name__ == "__main__":
    main()
