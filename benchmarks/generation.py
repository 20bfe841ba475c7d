"""Generation throughput of the hf backend: batched versus one prompt at a time.

Run from the repository root::

    HF_HUB_OFFLINE=1 python benchmarks/generation.py [--batch-sizes 1,8] [--repeats 3]

What is timed
    `HFBackend.generate(requests)` -- the code path evaluations use (chat template, tokenising,
    length-sorted chunking by `spec.batch_size`, left padding, `model.generate`, decoding). One
    backend is built per batch size from `parse_model_spec(model, batch_size=N)`, loaded and
    warmed up outside the timed region, so only generation is timed.

Why every prompt is forced to the full `--max-new-tokens`
    Greedy decoding lets each prompt stop at its own EOS. One at a time, a prompt that stops
    after 10 tokens costs 10 decoding steps; in a batch, `model.generate` keeps stepping the
    whole batch until its longest row finishes, so early-stopping rows burn compute on padding.
    tokens/s at batch 8 would then mix two effects -- batching (more rows per weight read) and
    length mismatch (wasted rows) -- and would depend on which prompts happen to ramble. To
    measure batching alone we set `min_new_tokens = max_new_tokens` on the model's
    `generation_config`: `model.generate` reads it because `generate_token_ids` passes no
    `min_new_tokens` of its own, and it masks the stop tokens until the limit, so every row
    produces exactly `max_new_tokens` real tokens. Nothing in hf.py is patched, and we check
    that every result has `n_generated_tokens == max_new_tokens` and `finish_reason ==
    "length"`, so the token count (the sum of `n_generated_tokens`) equals the work done.
    `--allow-eos` turns the forcing off to see the throughput of useful tokens under natural
    stopping, padding waste included.

Threads
    `HFBackend` uses one torch thread per usable core when it loads (unless OMP_NUM_THREADS is
    set). `--threads` overrides
    that after loading (to study thread scaling); the JSON records the count used.

    On a shared machine, other processes distort the numbers badly: a second process running
    torch on all cores (as another `HFBackend` does) oversubscribes the OpenMP pool, and we have
    seen that cut batch-1 tokens/s about five-fold. Each result therefore records
    `other_processes_cores`, the CPU other processes used during its timed region (from
    /proc/stat, in cores), and the script warns when it is not near zero.

Output
    A rich table on stdout and JSON at `--out` with the model, thread count, `max_new_tokens`,
    one result per batch size, and platform facts (numbers mean little without the machine).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import measure  # beside this script
import torch
from chat_prompts import build_requests
from measure import cpu_seconds, other_processes_cores, throughput, timed_repeats
from reporting import fmt, rich_table, shape_cells, write_json
from rich.console import Console

from evalharness.backends.hf import HFBackend
from evalharness.backends.spec import parse_model_spec
from evalharness.engine.requests import GenerateRequest, SamplingParams

DEFAULT_OUT = Path("benchmarks/results/generation.json")


def padded_prompt_tokens(backend: HFBackend, requests: Sequence[GenerateRequest]) -> int:
    """Prompt positions the prefill computes, padding included.

    Mirrors `HFBackend.generate`: prompts sorted by token length, then chunked by batch size, each
    chunk padded to its longest prompt.
    """
    lengths = sorted(
        len(backend.encode(backend.render_chat(r.messages), templated=True)) for r in requests
    )
    size = backend.batch_size
    chunks = [lengths[i : i + size] for i in range(0, len(lengths), size)]
    return sum(max(chunk) * len(chunk) for chunk in chunks)


def load_backend(model: str, batch_size: int, threads: int | None) -> HFBackend:
    """An HFBackend for one batch size, its weights loaded (outside any timed region)."""
    backend = HFBackend(parse_model_spec(model, batch_size=batch_size))
    backend.model  # noqa: B018 -- the property loads the weights
    if threads is not None:
        torch.set_num_threads(threads)  # after loading: `_load` sets its own count
    return backend


def bench_batch_size(
    args: argparse.Namespace, batch_size: int, requests: list[GenerateRequest]
) -> dict[str, Any]:
    """Warm up, then time `--repeats` full passes over `requests` at one batch size."""
    force = None if args.allow_eos else args.max_new_tokens
    backend = load_backend(args.model, batch_size, args.threads)
    # Warm-up: one short batch at this batch size, so one-time costs (lazy initialisation,
    # allocator growth, kernel selection) stay out of the timed region.
    warm_sampling = SamplingParams(temperature=0.0, max_new_tokens=8)
    warm = [GenerateRequest(r.messages, warm_sampling) for r in requests[:batch_size]]
    backend.model.generation_config.min_new_tokens = None if force is None else 8
    backend.generate(warm)
    backend.model.generation_config.min_new_tokens = force

    cpu_before = cpu_seconds()
    durations, results = timed_repeats(lambda: backend.generate(requests), args.repeats)
    other_cores = other_processes_cores(cpu_before, cpu_seconds(), sum(durations))
    generated = sum(r.n_generated_tokens for r in results)
    if force is not None:
        short = [r for r in results if r.n_generated_tokens != force or r.finish_reason != "length"]
        if short:
            raise SystemExit(
                f"batch {batch_size}: {len(short)} results did not generate exactly {force} "
                "tokens; min_new_tokens was not honoured, so tokens/s would be misleading"
            )
    return {
        "batch_size": batch_size,
        "prompts": len(requests),
        "prompt_tokens": sum(r.n_prompt_tokens for r in results),
        "padded_prompt_tokens": padded_prompt_tokens(backend, requests),
        "generated_tokens": generated,
        **throughput(durations, generated),
        "finish_stop": sum(r.finish_reason == "stop" for r in results),
        "other_processes_cores": other_cores,
    }


def machine_info() -> dict[str, Any]:
    """The shared machine facts plus the library versions that decide generation speed."""
    import transformers

    return {
        **measure.machine_info(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
    }


def render_table(results: list[dict[str, Any]], title: str) -> Any:
    columns = ("batch size", "prompts", "gen tokens", "seconds", "tokens/s", "speed-up", "busy")
    cells = (
        [
            *shape_cells(row, "batch_size", "prompts", "generated_tokens"),
            f"{row['seconds']:.2f}",
            f"{row['tokens_per_s']:.1f}",
            fmt(row["speedup_vs_batch_1"], ".2f", "x"),
            fmt(row["other_processes_cores"], ".2f"),
        ]
        for row in results
    )
    caption = "busy: CPU cores other processes used while timing (should be ~0)"
    return rich_table(title, columns, cells, caption=caption)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="model spec or alias (hf backend)")
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated, e.g. 1,4,8")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes; median reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads after loading")
    parser.add_argument(
        "--allow-eos", action="store_true", help="let prompts stop at EOS (useful tokens/s)"
    )
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--batch-sizes needs positive integers")
    if args.n_prompts < 1 or args.max_new_tokens < 1 or args.repeats < 1:
        parser.error("--n-prompts, --max-new-tokens and --repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    requests = build_requests(args.n_prompts, args.max_new_tokens)
    results = []
    for batch_size in args.batch_sizes:
        console.print(f"batch size {batch_size}: generating {len(requests)} prompts ...")
        results.append(bench_batch_size(args, batch_size, requests))
    baseline = next((r["tokens_per_s"] for r in results if r["batch_size"] == 1), None)
    for row in results:
        ratio = row["tokens_per_s"] / baseline if baseline else None
        row["speedup_vs_batch_1"] = None if ratio is None else round(ratio, 2)

    mode = "natural EOS" if args.allow_eos else f"forced {args.max_new_tokens} tokens/prompt"
    title = f"{args.model}: greedy generation, {mode}, {torch.get_num_threads()} torch threads"
    console.print(render_table(results, title))
    report = {
        "model": args.model,
        "torch_threads": torch.get_num_threads(),
        "max_new_tokens": args.max_new_tokens,
        "forced_length": not args.allow_eos,
        "repeats": args.repeats,
        "results": results,
        "machine": machine_info(),
    }
    write_json(args.out, report)
    console.print(f"wrote {args.out}")
    busy = [r for r in results if (r["other_processes_cores"] or 0.0) > 0.2]
    if busy:
        sizes = ", ".join(str(r["batch_size"]) for r in busy)
        console.print(
            f"[yellow]warning: other processes used CPU while batch size {sizes} was timed "
            "(see other_processes_cores); torch's OpenMP threads slow down sharply when the "
            "cores are oversubscribed, so those numbers are unreliable[/yellow]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
