"""Token log-prob scoring: peak memory and time of the naive, chunked and fused paths.

Run from the repository root::

    python benchmarks/scoring.py [--shapes cpu|gpu|llama] [--mode forward|backward|both]
    python benchmarks/scoring.py --n 8192 --d 576 --v 49152 --paths naive,chunked
    python benchmarks/scoring.py --device cuda --quick --json PATH   # ~2 min, for make test-gpu
    python benchmarks/scoring.py --device cuda --shapes llama --mode both   # the kernel goals

What is measured
    The primitive is `log_softmax(hidden @ weight.T)[target]` per row: hidden [N, D], LM-head
    weight [V, D], targets [N], a float32 result [N]. The paths are

    naive     `torch.log_softmax((hidden @ weight.T).float(), -1).gather(1, targets[:, None])`,
              what a typical trainer does: it materialises the [N, V] logits (and more).
    chunked   `evalharness.kernels.dispatch.token_logprobs(..., impl="chunked")`, the PyTorch
              fallback that never holds more than a chunk of rows x vocab of logits.
    triton    `token_logprobs(..., impl="triton")`, the fused kernel (CUDA only: under
              TRITON_INTERPRET=1 on a CPU it is far too slow to benchmark), with the backward
              schedule `auto`'s table picks for N; `triton-two-pass` and `triton-one-pass`
              force one schedule (kernels/backward_plan.py), to measure the table's split.
    liger     Liger-Kernel's `LigerFusedLinearCrossEntropyLoss(reduction="none")`, called as
              `loss(weight, hidden, targets)` (CUDA only, if installed); it returns the per-token
              NLL, so the log-prob is its negation.
    cce       Apple's cut-cross-entropy `linear_cross_entropy(hidden, weight, targets,
              reduction="none", impl=--cce-impl)` (CUDA only, if installed); also an NLL.

    `--mode forward` runs under `torch.no_grad()` with inputs that do not require grad (Liger
    computes gradients inside its forward whenever the input requires grad, so this matters);
    `--mode backward` times forward plus `logprobs.sum().backward()` into `hidden` and `weight`.

Isolation
    Every (path, config, mode) runs in a fresh interpreter (`scoring.py --worker SPEC`, which
    prints one JSON line), so the peak memory of one measurement is not polluted by the
    allocations, caches or freed-but-retained heap of another.

Peak memory ("extra peak": memory above what the inputs already occupy)
    CPU: the worker imports everything and calls the path once on tiny inputs, builds the real
    inputs, runs `gc.collect()` and `malloc_trim(0)` (so freed heap memory cannot be reused
    unseen), then resets the kernel's peak-RSS counter by writing "5" to /proc/self/clear_refs,
    reads VmRSS as the baseline, runs the path once and reads VmHWM. extra peak = VmHWM -
    baseline. If clear_refs cannot be written, `ru_maxrss` is used instead (a peak since the
    process started, so possibly inflated by input creation); the row says which method it used.
    CUDA: `torch.cuda.reset_peak_memory_stats()` after the warm-up, baseline
    `memory_allocated()`, extra peak = `max_memory_allocated()` - baseline over one run.
    In backward mode the extra peak includes the gradients of hidden and weight themselves.

Time
    Median wall-clock of `--repeats` runs (default 3 on CPU, 20 on CUDA, each bracketed by
    `torch.cuda.synchronize()` after `--warmup` untimed full-size runs). On CPU the first timed
    run is the one whose peak is measured (each run allocates afresh, so it is representative).
    On CUDA the table also shows the achieved TFLOP/s of the head matmul (2*N*D*V per forward,
    3x that for forward+backward; paths that recompute logits in backward do more real work than
    this count) and its fraction of `--peak-tflops` (989 for H100/H200 bf16 dense by default).

Correctness
    Every row also reports max |logprob - reference| over the first 256 rows, the reference being
    float64 `log_softmax` computed from the same (dtype-rounded) inputs, so a fast path cannot
    hide a wrong answer. In backward mode it also reports, for every path, the max abs error of
    d(sum)/d(hidden) on those rows (each row's hidden-gradient depends on that row alone) and of
    d(sum)/d(weight) on the first 256 vocabulary rows, summed over all N rows in float64 a chunk
    of rows at a time.

Skips
    Paths that need CUDA (or a package that is not installed) are listed as skipped. The naive
    path is skipped when its [N, V] buffers would exceed `--max-naive-gib` (default 6 GiB on
    CPU, 85% of the GPU's memory on CUDA): about 8 bytes per logit forward (fp32 logits plus
    the log_softmax output) and 12 backward (output, gather gradient, log_softmax gradient).

Checks
    For every CPU config with V >= 32000 and N >= 8192, the requirement is chunked extra peak <=
    naive extra peak / 20. Where naive was skipped, its lower bound N*V*4 bytes (the fp32
    logits it must hold) stands in for it, which only makes the check stricter. The exit status
    is 1 when a check fails or a worker crashed.

    On CUDA, the kernel's goals are checked per (N, D, V): forward time <= CCE's, forward +
    backward time <= CCE's and Liger's, forward + backward extra peak <= CCE's. They are
    reported (table and JSON "goals"), not turned into the exit status.

Presets
    `--shapes llama`: D = 4096, V = 128256 at N = 8192 and 32768 (the goals' shapes).
    `--quick` (CUDA): N = 8192 of those, forward and backward, paths triton, naive, liger and
    cce, 5 repeats after 1 warm-up, each worker capped at 150 s: about 2 minutes on an H100,
    most of it process start-up and the first compile. Autotuning results are cached on disk
    (Triton's cache), so later workers and later runs skip the tuning.

Output
    A table on stdout and JSON at `--json`/`--out` (default
    `benchmarks/results/scoring-<device>.json`) with one row per (path, config, mode), the
    checks, the goals, and device facts (CPU model or GPU name, torch/triton/liger/cce versions,
    date). The full `gpu` grid is 27 configs x 5 paths; narrow it with `--paths`, `--mode` or
    explicit `--n/--d/--v` lists.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from measure import cpu_model, gpu_slug, package_versions, run_json_worker  # beside this script
from reporting import print_peak_methods, save_report
from scoring_paths import CUDA_ONLY, LOGIT_STD, OURS, PACKAGES, PATHS, REFERENCE_ROWS
from scoring_report import (
    CHECK_MIN_N,
    CHECK_MIN_V,
    add_derived,
    build_checks,
    build_goals,
    render_checks,
    render_goals,
    render_table,
)
from scoring_worker import RESULT_PREFIX, worker_main

DEFAULT_PATHS = ("naive", "chunked", "triton", "liger", "cce")
DISTRIBUTIONS = {
    "torch": "torch",
    "triton": "triton",
    "liger_kernel": "liger-kernel",
    "cut_cross_entropy": "cut-cross-entropy",
}
SHAPE_PRESETS: dict[str, list[tuple[int, int, int]]] = {
    # A 2-core CPU: forward over all of these takes a few minutes (naive N=8192, V=128256 is
    # skipped by the default 6 GiB cap).
    "cpu": [
        *((n, 576, v) for n in (2048, 8192) for v in (32000, 49152, 128256)),
        (2048, 2048, 32000),
        (32768, 576, 49152),  # naive skipped (~12 GiB); the fallback's memory stays flat
    ],
    "gpu": list(itertools.product((2048, 8192, 32768), (576, 2048, 4096), (32000, 49152, 128256))),
    # The fused kernel's goals: a Llama-3 head (D = 4096, V = 128256).
    "llama": [(8192, 4096, 128256), (32768, 4096, 128256)],
}
QUICK = {
    "configs": [(8192, 4096, 128256)],
    "paths": ["triton", "naive", "liger", "cce"],
    "mode": "both",
    "repeats": 5,
    "warmup": 1,
    # One slow worker (a cold compile and tune takes ~30 s) must not use up the whole
    # `make test-gpu` kernel step (150 s): the rows after it would be lost.
    "worker_timeout": 75.0,
}
DEFAULT_CPU_NAIVE_CAP_GIB = 6.0
GPU_NAIVE_CAP_FRACTION = 0.85
NAIVE_BYTES_PER_LOGIT = {"forward": 8, "backward": 12}
H100_H200_BF16_DENSE_TFLOPS = 989.0
MIB = 1024**2
GIB = 1024**3


def naive_estimate_bytes(n: int, v: int, mode: str) -> int:
    """Bytes of [N, V] buffers the naive path holds at its peak (see the module docstring)."""
    return n * v * NAIVE_BYTES_PER_LOGIT[mode]


def skip_reason(
    path: str, n: int, v: int, mode: str, args: argparse.Namespace, kernels_error: str | None
) -> str | None:
    if path in CUDA_ONLY and args.device != "cuda":
        return "skipped: needs CUDA"  # triton under TRITON_INTERPRET=1 is far too slow
    if path in PACKAGES and importlib.util.find_spec(PACKAGES[path]) is None:
        return f"skipped: {PACKAGES[path]} not installed"
    if path in OURS and kernels_error is not None:
        return f"skipped: evalharness.kernels.dispatch not importable ({kernels_error})"
    if path == "naive":
        need = naive_estimate_bytes(n, v, mode)
        if need > args.max_naive_gib * GIB:
            return (
                f"skipped: naive would need ~{need / GIB:.1f} GiB of [N, V] buffers "
                f"(> --max-naive-gib {args.max_naive_gib:g})"
            )
    return None


def run_one(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One fresh worker process; its result dict (status ok/oom/failed)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    result = run_json_worker(command, RESULT_PREFIX, timeout_s=timeout_s)
    if result["status"] == "timeout":
        result["status"] = "failed"
    return result


def device_info(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": args.device,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": args.threads or torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(DISTRIBUTIONS),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
        info["cuda"] = torch.version.cuda
    return info


def kernels_import_error() -> str | None:
    try:
        from evalharness.kernels.dispatch import token_logprobs  # noqa: F401
    except Exception as exc:  # ImportError, or anything the module raises while it is in flux
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def parse_list(text: str | None) -> list[int] | None:
    return None if text is None else [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--shapes",
        choices=sorted(SHAPE_PRESETS),
        default=None,
        help="preset grid (default: cpu on CPU, gpu on CUDA)",
    )
    parser.add_argument("--n", help="comma-separated token counts (with --d and --v)")
    parser.add_argument("--d", help="comma-separated hidden sizes")
    parser.add_argument("--v", help="comma-separated vocabulary sizes")
    parser.add_argument(
        "--paths", default=",".join(DEFAULT_PATHS), help=f"subset of {','.join(PATHS)}"
    )
    parser.add_argument("--mode", choices=("forward", "backward", "both"), default="forward")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="default float32 on CPU, bfloat16 on CUDA",
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 3 CPU, 20 CUDA")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed full-size runs before timing (default 0 CPU, 3 CUDA)",
    )
    parser.add_argument(
        "--max-naive-gib",
        type=float,
        default=None,
        help=f"skip naive above this (default {DEFAULT_CPU_NAIVE_CAP_GIB:g} on "
        f"CPU, {GPU_NAIVE_CAP_FRACTION * 100:.0f}%% of GPU memory on CUDA)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="dense peak for %% of peak (default 989 on H100/H200 in bf16)",
    )
    parser.add_argument(
        "--cce-impl",
        default="cce",
        help="cut-cross-entropy impl (cce_exact: no gradient filtering)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads in workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker-timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--out", "--json", dest="out", type=Path, default=None, help="JSON path")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CUDA smoke preset for make test-gpu (~2 min on an H100): N=8192, D=4096, "
        "V=128256, forward and backward, triton/naive/liger/cce",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return args

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    cuda = args.device == "cuda"
    if args.quick:
        if not cuda:
            parser.error("--quick is the CUDA preset; on a CPU give --n/--d/--v")
        if any(x is not None for x in (args.n, args.d, args.v, args.shapes)):
            parser.error("--quick fixes the shapes; leave out --n/--d/--v/--shapes")
        args.paths = ",".join(QUICK["paths"])
        args.mode = QUICK["mode"]
        args.repeats = args.repeats or QUICK["repeats"]
        args.warmup = QUICK["warmup"] if args.warmup is None else args.warmup
        args.worker_timeout = min(args.worker_timeout, QUICK["worker_timeout"])
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown paths {unknown}; choose from {', '.join(PATHS)}")
    explicit = [parse_list(args.n), parse_list(args.d), parse_list(args.v)]
    if args.quick:
        args.configs = list(QUICK["configs"])
    elif any(x is not None for x in explicit):
        if any(not x for x in explicit) or args.shapes is not None:
            parser.error("give all of --n, --d and --v (comma lists), and no --shapes")
        args.configs = list(itertools.product(*explicit))
    else:
        args.configs = SHAPE_PRESETS[args.shapes or ("gpu" if cuda else "cpu")]
    if any(min(c) < 1 for c in args.configs):
        parser.error("--n, --d and --v must be positive")
    args.modes = ["forward", "backward"] if args.mode == "both" else [args.mode]
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.repeats = args.repeats or (20 if cuda else 3)
    args.warmup = (3 if cuda else 0) if args.warmup is None else args.warmup
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    if args.max_naive_gib is None:
        if cuda:
            total = torch.cuda.get_device_properties(0).total_memory
            args.max_naive_gib = round(GPU_NAIVE_CAP_FRACTION * total / GIB, 1)
        else:
            args.max_naive_gib = DEFAULT_CPU_NAIVE_CAP_GIB
    if args.peak_tflops is None and cuda and args.dtype == "bfloat16":
        name = torch.cuda.get_device_name(0)
        if "H100" in name or "H200" in name:
            args.peak_tflops = H100_H200_BF16_DENSE_TFLOPS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)

    from rich.console import Console

    console = Console(width=max(140, Console().width))  # 80 when piped: too narrow
    cuda = args.device == "cuda"
    kernels_error = kernels_import_error() if set(OURS) & set(args.paths) else None
    slug = gpu_slug() if cuda else "cpu"
    out = args.out or Path(f"benchmarks/results/scoring-{slug}.json")

    rows: list[dict[str, Any]] = []
    for (n, d, v), mode, path in itertools.product(args.configs, args.modes, args.paths):
        row: dict[str, Any] = {"path": path, "n": n, "d": d, "v": v, "dtype": args.dtype}
        row |= {
            "mode": mode,
            "naive_estimate_gib": round(naive_estimate_bytes(n, v, mode) / GIB, 2),
        }
        reason = skip_reason(path, n, v, mode, args, kernels_error)
        if reason is not None or args.dry_run:
            row |= {"status": "skipped" if reason else "dry-run", "reason": reason or "dry run"}
            rows.append(row)
            continue
        spec = {
            "path": path,
            "n": n,
            "d": d,
            "v": v,
            "dtype": args.dtype,
            "mode": mode,
            "device": args.device,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "threads": args.threads,
            "cce_impl": args.cce_impl,
        }
        console.print(f"{path:8} N={n} D={d} V={v} {args.dtype} {mode} ...", end=" ")
        row |= run_one(spec, args.worker_timeout)
        if row["status"] == "ok":
            console.print(f"{row['time_ms']:.1f} ms, +{row['extra_peak_mib']:.1f} MiB")
        else:
            console.print(f"[red]{row['status']}[/red]: {row.get('reason')}")
        rows.append(row)
        # What is measured so far, so a run cut short (a time limit) keeps its numbers.
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": "scoring", "partial": True, "results": rows}))

    add_derived(rows, cuda, args.peak_tflops)
    info = device_info(args)
    where = info.get("gpu") or f"{info['cpu_model']}, {info['torch_threads']} torch threads"
    title = f"token log-prob scoring on {where}: median of {args.repeats}, extra peak above inputs"
    # CUDA-only paths on a CPU run stay in the JSON but would only clutter the table.
    needs_cuda = sorted({r["path"] for r in rows if r.get("reason") == "skipped: needs CUDA"})
    shown = [r for r in rows if r.get("reason") != "skipped: needs CUDA"]
    console.print(render_table(shown, title, cuda))
    if needs_cuda:
        console.print(f"not run (need CUDA): {', '.join(needs_cuda)}")
    checks = build_checks(rows, args.device)
    goals = build_goals(rows) if cuda else []
    if goals:
        console.print(render_goals(goals))
    if checks:
        console.print(render_checks(checks))
    elif args.device == "cpu":
        console.print(
            f"no check applies (needs a chunked run with N >= {CHECK_MIN_N}, V >= {CHECK_MIN_V})"
        )
    print_peak_methods(console, rows)
    report = {
        "benchmark": "scoring",
        "settings": {
            "dtype": args.dtype,
            "modes": args.modes,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "max_naive_gib": args.max_naive_gib,
            "peak_tflops": args.peak_tflops,
            "cce_impl": args.cce_impl,
            "quick": args.quick,
            "reference_rows": REFERENCE_ROWS,
            "logit_std": LOGIT_STD,
        },
        "device": info,
        "results": rows,
        "checks": checks,
        "goals": goals,
    }
    if not save_report(console, out, report, rows, dry_run=args.dry_run, during="timed run(s)"):
        return 0
    failed = [r for r in rows if r["status"] == "failed"]
    check_failed = any(c["passed"] is False for c in checks)
    return 1 if failed or check_failed else 0


if __name__ == "__main__":
    sys.exit(main())
