"""`evalharness serve`: concurrent requests batched on the model thread vs one at a time.

A Llama-shaped model (random weights; the tiny test tokenizer) is served over real HTTP on
127.0.0.1. The same requests are sent twice: one after another, then all at once from as many
threads. Generation (greedy, `--new-tokens` each) and scoring (echo logprobs, as lm-eval's
`local-completions` asks) are timed separately; the table gives requests per second, the
speed-up and the largest batch the worker ran. Answers must be the same both ways (checked).

    python benchmarks/serve_batching.py --device cpu
    python benchmarks/serve_batching.py --device cuda --layers 16 --hidden 2048 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from random_llama import add_size_args, random_llama  # noqa: E402 - beside this script
from reporting import write_json  # noqa: E402


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch

    model, tokenizer = random_llama(args.layers, args.hidden)
    model = model.to(getattr(torch, args.dtype)).to(args.device)
    model.generation_config.eos_token_id = None  # run every request to --new-tokens
    return model, tokenizer


def timed(url: str, bodies: list[dict[str, Any]], concurrent: bool) -> tuple[float, list[Any]]:
    import httpx

    answers: list[Any] = [None] * len(bodies)

    def ask(i: int) -> None:
        response = httpx.post(url, json=bodies[i], timeout=600)
        response.raise_for_status()
        answers[i] = response.json()["choices"][0]

    started = time.perf_counter()
    if concurrent:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for i in range(len(bodies)):
            ask(i)
    return time.perf_counter() - started, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    add_size_args(parser)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "serve_batching.json"))
    args = parser.parse_args()

    from local_server import running_server

    from evalharness.backends.in_memory import InMemoryHFBackend
    from evalharness.serve import create_app

    model, tokenizer = build(args)
    backend = InMemoryHFBackend(model, tokenizer, name="bench", batch_size=args.max_batch)
    app = create_app(backend, "bench", max_batch=args.max_batch)
    words = [
        "the",
        "river",
        "model",
        "answer",
        "capital",
        "long",
        "short",
        "bright",
        "quiet",
        "green",
        "paper",
        "stone",
    ]
    prompts = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(8 + i % 9))
        for i in range(args.requests)
    ]
    workloads = {
        "generate": [
            {"model": "bench", "prompt": p, "max_tokens": args.new_tokens, "temperature": 0}
            for p in prompts
        ],
        "score": [
            {"model": "bench", "prompt": p * 4, "max_tokens": 0, "echo": True, "logprobs": 1}
            for p in prompts
        ],
    }
    rows = []
    with running_server(app) as base_url:
        url = f"{base_url}/completions"
        timed(url, workloads["generate"][:2], concurrent=False)  # warm-up
        for name, bodies in workloads.items():
            sequential, one_by_one = timed(url, bodies, concurrent=False)
            app.state.worker.stats.largest_batch = 0
            batched, together = timed(url, bodies, concurrent=True)
            same = all(
                a["text"] == b["text"]
                if name == "generate"
                else max(
                    abs(x - y)
                    for x, y in zip(
                        a["logprobs"]["token_logprobs"][1:],
                        b["logprobs"]["token_logprobs"][1:],
                        strict=True,
                    )
                )
                < 1e-2
                for a, b in zip(one_by_one, together, strict=True)
            )
            rows.append(
                {
                    "workload": name,
                    "requests": len(bodies),
                    "sequential_s": round(sequential, 3),
                    "concurrent_s": round(batched, 3),
                    "sequential_rps": round(len(bodies) / sequential, 2),
                    "concurrent_rps": round(len(bodies) / batched, 2),
                    "speedup": round(sequential / batched, 2),
                    "largest_batch": app.state.worker.stats.largest_batch,
                    "same_answers": same,
                }
            )
    setup = {k: v for k, v in vars(args).items() if k != "json"}
    header = f"{'workload':9} {'n':>4} {'seq s':>8} {'conc s':>8} {'seq r/s':>8} "
    header += f"{'conc r/s':>9} {'speed-up':>8} {'batch':>6} same"
    print(f"serve batching: {setup}")
    print(header)
    for r in rows:
        print(
            f"{r['workload']:9} {r['requests']:>4} {r['sequential_s']:>8.2f} "
            f"{r['concurrent_s']:>8.2f} {r['sequential_rps']:>8.1f} {r['concurrent_rps']:>9.1f} "
            f"{r['speedup']:>7.1f}x {r['largest_batch']:>6} {r['same_answers']}"
        )
    write_json(Path(args.json), {"setup": setup, "rows": rows})


if __name__ == "__main__":
    main()
