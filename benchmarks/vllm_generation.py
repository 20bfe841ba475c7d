"""Generation throughput of the hf backend versus the vllm backend, same model, same prompts.

Run from the repository root, in the vLLM venv (`make vllm-venv`; it has vllm and evalharness)::

    HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/vllm_generation.py \
        [--model default] [--prompts 16] [--max-new-tokens 64] [--hf-batch-size 8] \
        [--vllm-omp-binds auto,0-1]

What is timed
    `backend.generate(requests)` of both backends, each built from `parse_model_spec(...)` and
    `load_backend` as an evaluation builds it (`MODEL` for hf, `vllm:MODEL` with
    `max_model_len=2048` for vllm): chat template, tokenising, generation, decoding. hf chunks
    the length-sorted prompts into left-padded batches of `--hf-batch-size` (the engine's
    default, 8); vllm gets all prompts in one call and batches them continuously itself.
    Loading (and, for vllm, starting the engine and its worker process) plus one short warm-up
    call happen outside the timed region; that start-up time is reported as a row of its own,
    because on a CPU starting vLLM's engine costs about 30 s -- more than a small evaluation's
    whole generation -- and is paid again by every process that starts one. Warm-up prompts
    differ from the timed ones, so vLLM's prefix cache holds none of the timed prompts (only
    the chat template's shared system turn, as in a real evaluation).

Why every prompt is forced to the full `--max-new-tokens`
    Greedy decoding lets each prompt stop at its own EOS, and the two backends then do
    different amounts of wasted work (hf keeps stepping a batch until its longest row ends;
    vLLM drops a finished sequence at once), so tokens/s would mix engine speed with which
    prompts happen to ramble. As in `generation.py`, hf gets `min_new_tokens = max_new_tokens`
    on the model's `generation_config`. vLLM builds its own `SamplingParams` in
    `VLLMBackend.sampling_params`; this script wraps that method on its backend instance (the
    library is not patched) to also set `min_tokens = max_new_tokens` and `ignore_eos = True`.
    Every result is checked to have `n_generated_tokens == max_new_tokens`, so the token count
    equals the work done. The number of prompts whose greedy texts are identical across the two
    backends is reported too: the kernels differ, and past the point where EOS would have been
    the forced continuation is fragile, so fewer than all is expected and not a fault.

Threads and CPU contention
    `HFBackend` runs one torch thread per usable core. vLLM's CPU build runs the model in an
    engine-core process; with `VLLM_CPU_OMP_THREADS_BIND=auto` (its default) it binds OpenMP
    threads to cores and keeps one core back for the engine's own loop, so on a 2-core machine
    the model gets a single thread. `--vllm-omp-binds auto,0-1` starts one engine per setting
    (one after another) to show the difference; the value is set in the environment before the
    engine process starts. hf is timed first, before any engine exists.

    `busy` is the CPU (in cores) that processes outside this script's own process tree used
    while a row was timed (from /proc/stat minus this process and its descendants, which
    include vLLM's engine core); it should be near zero.

Without vLLM
    Where `import vllm` fails (a GPU image without it: its CUDA wheel is too large to carry),
    the hf row is still measured and the vllm row is `"status": "skipped"` with the reason.

Output
    A rich table on stdout and JSON at `--out` (default `benchmarks/results/vllm_generation.json`)
    with the settings, one row per backend (start-up and generation, and the device and dtype
    the hf model ran in), the agreement count, the vLLM environment and platform facts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import measure  # beside this script
from chat_prompts import build_requests
from measure import cpu_seconds, other_processes_cores, throughput, timed_repeats
from reporting import fmt, rich_table, shape_cells, write_json
from rich.console import Console

from evalharness.backends import load_backend
from evalharness.backends.spec import parse_model_spec
from evalharness.backends.vllm import quiet_vllm, vllm_available
from evalharness.engine.requests import GenerateRequest, GenerateResult, Message, SamplingParams

DEFAULT_OUT = Path("benchmarks/results/vllm_generation.json")
MAX_MODEL_LEN = 2048
BIND_VAR = "VLLM_CPU_OMP_THREADS_BIND"
VLLM_ENV = (BIND_VAR, "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU", "OMP_NUM_THREADS")

# Warm-up only: different texts, so no timed prompt is in vLLM's prefix cache beforehand.
WARM_UP: tuple[str, ...] = (
    "Name a famous bridge.",
    "What colour are most school buses in the United States?",
    "Write one sentence about the sea.",
    "Tell me a fun fact about owls, please.",
)
WARM_UP_TOKENS = 8


def warm_up_requests(count: int) -> list[GenerateRequest]:
    sampling = SamplingParams(temperature=0.0, max_new_tokens=WARM_UP_TOKENS)
    return [
        GenerateRequest((Message("user", WARM_UP[i % len(WARM_UP)]),), sampling)
        for i in range(count)
    ]


# -- CPU accounting ----------------------------------------------------------------------------
def _proc_stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of one process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
    # fields[0] is the state: ppid is field 4 of stat, utime/stime fields 14 and 15.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_tree_cpu_seconds() -> float:
    """CPU seconds of this process and all its live descendants (vLLM's engine core)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(entry.name)) is not None:
            stats[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += stats.get(pid, (0, 0.0))[1]
        stack.extend(children.get(pid, ()))
    return total


def timed(
    run: Callable[[], list[GenerateResult]], repeats: int
) -> tuple[list[GenerateResult], list[float], float | None, float]:
    """Results of the last pass, each pass's seconds, other processes' cores, own-tree cores."""
    machine_before, tree_before = cpu_seconds(), own_tree_cpu_seconds()
    durations, results = timed_repeats(run, repeats)
    machine_after, tree_after = cpu_seconds(), own_tree_cpu_seconds()
    elapsed = sum(durations)
    own_cores = round((tree_after - tree_before) / elapsed, 2)
    other_cores = other_processes_cores(
        machine_before, machine_after, elapsed, own_seconds=tree_after - tree_before
    )
    return results, durations, other_cores, own_cores


def check_forced(label: str, results: Sequence[GenerateResult], max_new_tokens: int) -> None:
    short = [r for r in results if r.n_generated_tokens != max_new_tokens]
    if short:
        counts = sorted({r.n_generated_tokens for r in short})
        raise SystemExit(
            f"{label}: {len(short)} results did not generate exactly {max_new_tokens} tokens "
            f"(got {counts}); the length forcing was not honoured, so tokens/s would mislead"
        )


def row(
    label: str,
    batching: str,
    results: list[GenerateResult],
    durations: list[float],
    other_cores: float | None,
    own_cores: float,
    start_s: float,
) -> dict[str, Any]:
    generated = sum(r.n_generated_tokens for r in results)
    return {
        "backend": label,
        "batching": batching,
        "start_seconds": round(start_s, 2),
        "prompts": len(results),
        "prompt_tokens": sum(r.n_prompt_tokens for r in results),
        "generated_tokens": generated,
        **throughput(durations, generated),
        "own_process_tree_cores": own_cores,
        "other_processes_cores": other_cores,
    }


# -- the two backends --------------------------------------------------------------------------
def bench_hf(
    args: argparse.Namespace, requests: list[GenerateRequest]
) -> tuple[dict[str, Any], list[str]]:
    import torch

    start = time.perf_counter()
    backend = load_backend(parse_model_spec(args.model, batch_size=args.hf_batch_size))
    config = backend.model.generation_config  # type: ignore[attr-defined] # loads the weights
    config.min_new_tokens = WARM_UP_TOKENS
    backend.generate(warm_up_requests(args.hf_batch_size))
    start_s = time.perf_counter() - start
    config.min_new_tokens = args.max_new_tokens
    threads = torch.get_num_threads()

    results, durations, other, own = timed(lambda: backend.generate(requests), args.repeats)
    check_forced("hf", results, args.max_new_tokens)
    result = row("hf", f"{args.hf_batch_size}/batch", results, durations, other, own, start_s)
    result["threads"] = f"{threads} torch"
    model = backend.model  # type: ignore[attr-defined]
    result["device"] = str(model.device)
    result["dtype"] = str(model.dtype).removeprefix("torch.")
    backend.close()
    return result, [r.text for r in results]


def vllm_spec(model: str) -> str:
    """The `vllm:` spec of the hf model spec or alias: `hf:PATH@REV` -> `vllm:PATH@REV`,
    `default` -> `vllm:smollm2-135m-instruct` (the backend maps built-in names itself)."""
    spec = parse_model_spec(model)
    return f"vllm:{spec.name}" + (f"@{spec.revision}" if spec.revision else "")


def force_full_length(backend: Any) -> None:
    """Wrap this backend instance's `sampling_params` so vLLM cannot stop before max_tokens."""
    original = backend.sampling_params

    def forced(sampling: SamplingParams, stop: tuple[str, ...]) -> Any:
        params = original(sampling, stop)
        params.min_tokens = sampling.max_new_tokens  # masks EOS and stop_token_ids until then
        params.ignore_eos = True
        return params

    backend.sampling_params = forced


def bench_vllm(
    args: argparse.Namespace, requests: list[GenerateRequest], bind: str | None
) -> tuple[dict[str, Any], list[str]]:
    if bind is not None:
        os.environ[BIND_VAR] = bind  # read by the engine-core process when it starts
    start = time.perf_counter()
    backend = load_backend(parse_model_spec(vllm_spec(args.model), max_model_len=MAX_MODEL_LEN))
    force_full_length(backend)
    backend.generate(warm_up_requests(len(WARM_UP)))  # starts the engine, then warms it up
    start_s = time.perf_counter() - start
    try:
        results, durations, other, own = timed(lambda: backend.generate(requests), args.repeats)
    finally:
        backend.close()
    check_forced("vllm", results, args.max_new_tokens)
    result = row("vllm", "continuous", results, durations, other, own, start_s)
    result["threads"] = f"bind {os.environ.get(BIND_VAR, 'auto')}"
    result[BIND_VAR] = os.environ.get(BIND_VAR, "auto")
    return result, [r.text for r in results]


# -- report ------------------------------------------------------------------------------------
def machine_info(env: dict[str, str | None]) -> dict[str, Any]:
    """Facts that decide CPU throughput, recorded next to the numbers."""
    import torch
    import transformers

    vllm_version = None
    if vllm_available():
        import vllm

        vllm_version = vllm.__version__
    return {
        **measure.machine_info(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "vllm": vllm_version,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "env": env,  # as the script started; each vllm row records its own bind
    }


def render_table(rows: list[dict[str, Any]], title: str) -> Any:
    columns = (
        "backend",
        "batching",
        "threads",
        "gen tokens",
        "seconds",
        "tokens/s",
        "vs hf",
        "cores",
        "busy",
    )
    cells = [
        [
            *shape_cells(result, "backend", "batching", "threads", "generated_tokens"),
            f"{result['seconds']:.2f}",
            f"{result['tokens_per_s']:.1f}",
            f"{result['speedup_vs_hf']:.2f}x",
            f"{result['own_process_tree_cores']:.2f}",
            fmt(result["other_processes_cores"], ".2f"),
        ]
        for result in rows
    ]
    cells += [
        [f"{r['backend']} start", "-", r["threads"], "-", f"{r['start_seconds']:.2f}"] for r in rows
    ]
    caption = (
        "start: load + engine start + warm-up, not timed with generation; cores: CPU this "
        "process and its children used while timing; busy: CPU other processes used (~0)"
    )
    return rich_table(title, columns, cells, columns[:3], caption)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="hf model spec or alias; vllm: prefixed")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hf-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes; median reported")
    parser.add_argument(
        "--vllm-omp-binds",
        default=None,
        help=f"comma-separated {BIND_VAR} values, one engine each (e.g. auto,0-1); "
        "default: the environment's (auto when unset)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if min(args.prompts, args.max_new_tokens, args.hf_batch_size, args.repeats) < 1:
        parser.error("--prompts, --max-new-tokens, --hf-batch-size and --repeats must be >= 1")
    if args.model.partition(":")[0] in ("vllm", "openai", "rm", "clf", "outputs", "bon"):
        parser.error("--model names the hf model (an alias or hf:PATH); vllm: is derived from it")
    binds = [b.strip() for b in (args.vllm_omp_binds or "").split(",") if b.strip()]
    args.binds = binds or [None]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = {name: os.environ.get(name) for name in VLLM_ENV}
    quiet_vllm()
    console = Console(width=None if sys.stdout.isatty() else 100)  # a log file: no wrapping
    requests = build_requests(args.prompts, args.max_new_tokens)
    label = f"{len(requests)} prompts x {args.max_new_tokens} tokens"

    console.print(f"hf: loading and generating {label} ...")
    hf_row, hf_texts = bench_hf(args, requests)
    rows = [hf_row]
    agreement = {}
    skipped = []
    if not vllm_available():
        skipped.append({"backend": "vllm", "status": "skipped", "reason": "vllm not installed"})
        console.print("vllm: skipped (vllm not installed)")
    for bind in args.binds if not skipped else ():
        shown = bind or os.environ.get(BIND_VAR, "auto")
        console.print(f"vllm ({BIND_VAR}={shown}): starting the engine, generating {label} ...")
        vllm_row, vllm_texts = bench_vllm(args, requests, bind)
        same = sum(a == b for a, b in zip(hf_texts, vllm_texts, strict=True))
        vllm_row["identical_texts_vs_hf"] = same
        agreement[f"vllm {vllm_row['threads']}"] = same
        rows.append(vllm_row)
    for result in rows:
        result["speedup_vs_hf"] = round(result["tokens_per_s"] / hf_row["tokens_per_s"], 2)

    title = (
        f"{args.model}: greedy generation, {label} (forced), hf vs vllm on "
        f"{len(os.sched_getaffinity(0))} usable cores"
    )
    console.print(render_table(rows, title))
    for name, same in agreement.items():
        console.print(f"identical greedy texts, hf vs {name}: {same}/{len(requests)}")
    report = {
        "model": args.model,
        "prompts": len(requests),
        "max_new_tokens": args.max_new_tokens,
        "forced_length": True,
        "hf_batch_size": args.hf_batch_size,
        "vllm_max_model_len": MAX_MODEL_LEN,
        "repeats": args.repeats,
        "results": rows + skipped,
        "machine": machine_info(env),
    }
    write_json(args.out, report)
    console.print(f"wrote {args.out}")
    busy = [r["backend"] for r in rows if (r["other_processes_cores"] or 0.0) > 0.2]
    if busy:
        console.print(
            f"[yellow]warning: other processes used CPU while {', '.join(busy)} was timed "
            "(see other_processes_cores); those numbers are unreliable[/yellow]"
        )
    return 0


if __name__ == "__main__":  # vLLM starts worker processes that import the main module
    sys.exit(main())
