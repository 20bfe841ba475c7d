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
import contextlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from measure import (  # beside this script
    cpu_seconds,
    fmt,
    proc_status_kib,
    reset_peak_rss,
    trim_heap,
)

RESULT_PREFIX = "SCORING_RESULT "
PATHS = ("naive", "chunked", "triton", "triton-two-pass", "triton-one-pass", "liger", "cce")
DEFAULT_PATHS = ("naive", "chunked", "triton", "liger", "cce")
OURS = ("chunked", "triton", "triton-two-pass", "triton-one-pass")
CUDA_ONLY = {"triton", "triton-two-pass", "triton-one-pass", "liger", "cce"}
PACKAGES = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}
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
CHECK_MIN_V, CHECK_MIN_N, CHECK_FACTOR = 32000, 8192, 20
REFERENCE_ROWS = 256
REFERENCE_CHUNK_ROWS = 1024  # float64 logits of the weight-gradient reference: 1 GiB at V=128k
LOGIT_STD = 3.0  # spread of the synthetic logits, roughly that of a trained LM head
H100_H200_BF16_DENSE_TFLOPS = 989.0
MIB = 1024**2
GIB = 1024**3


# --------------------------------------------------------------------------- worker side


def build_path(name: str, cce_impl: str) -> Callable[..., Any]:
    """`fn(hidden, weight, targets) -> logprobs [N]` for one path; imports happen here."""
    import torch

    if name == "naive":

        def naive(hidden: Any, weight: Any, targets: Any) -> Any:
            logits = (hidden @ weight.T).float()
            return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)

        return naive
    if name in OURS:
        from evalharness.kernels.dispatch import token_stats

        impl = "chunked" if name == "chunked" else "triton"
        schedule = name.removeprefix("triton-") if name.startswith("triton-") else None
        return lambda hidden, weight, targets: (
            token_stats(hidden, weight, targets, impl=impl, schedule=schedule).logprobs
        )
    if name == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import (
            LigerFusedLinearCrossEntropyLoss,
        )

        loss = LigerFusedLinearCrossEntropyLoss(reduction="none")

        def liger(hidden: Any, weight: Any, targets: Any) -> Any:
            nll = loss(weight, hidden, targets)  # Liger puts the weight first
            if isinstance(nll, tuple):  # newer versions may return (loss, z_loss, ...)
                nll = nll[0]
            return -nll

        return liger
    if name == "cce":
        from cut_cross_entropy import linear_cross_entropy

        return lambda hidden, weight, targets: (
            -linear_cross_entropy(hidden, weight, targets, reduction="none", impl=cce_impl)
        )
    raise ValueError(f"unknown path {name!r}")


def make_inputs(
    n: int, d: int, v: int, dtype: Any, device: str, seed: int, grad: bool
) -> tuple[Any, Any, Any]:
    """Deterministic hidden [N, D], weight [V, D], targets [N] (same for every path)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(n, d, dtype=dtype, device=device, generator=generator)
    weight = torch.randn(v, d, dtype=dtype, device=device, generator=generator)
    weight.mul_(LOGIT_STD / d**0.5)
    targets = torch.randint(0, v, (n,), device=device, generator=generator)
    hidden.requires_grad_(grad)
    weight.requires_grad_(grad)
    return hidden, weight, targets


def reference_errors(
    hidden: Any, weight: Any, targets: Any, logprobs: Any, backward: bool
) -> dict[str, float | None]:
    """Max abs errors against float64: log-probs and d sum / d hidden on the first rows, and
    d sum / d weight on the first vocabulary rows (a sum over all rows, built chunk by chunk)."""
    import torch

    rows = min(REFERENCE_ROWS, hidden.shape[0])
    errors: dict[str, float | None] = {"max_abs_err_grad_hidden": None}
    errors["max_abs_err_grad_weight"] = None
    with torch.no_grad():
        h = hidden.detach()[:rows].double()
        w = weight.detach().double()
        t = targets[:rows]
        log_p = torch.log_softmax(h @ w.T, -1)
        ref = log_p.gather(1, t[:, None]).squeeze(1)
        errors["max_abs_err"] = (logprobs[:rows].double() - ref).abs().max().item()
        if backward and hidden.grad is not None:
            ref_grad = w[t] - log_p.exp() @ w  # d log p_t / d h = w_t - sum_j p_j w_j
            errors["max_abs_err_grad_hidden"] = (
                (hidden.grad[:rows].double() - ref_grad).abs().max().item()
            )
        if backward and weight.grad is not None:
            vocab_rows = min(REFERENCE_ROWS, weight.shape[0])
            ref_grad_w = torch.zeros(vocab_rows, w.shape[1], dtype=torch.float64, device=w.device)
            for start in range(0, hidden.shape[0], REFERENCE_CHUNK_ROWS):
                h_chunk = hidden.detach()[start : start + REFERENCE_CHUNK_ROWS].double()
                t_chunk = targets[start : start + REFERENCE_CHUNK_ROWS]
                logits = h_chunk @ w.T
                p = torch.softmax(logits, -1)[:, :vocab_rows]
                del logits
                ref_grad_w -= p.T @ h_chunk  # d log p_t / d w_j = ([j = t] - p_j) h
                hits = t_chunk < vocab_rows
                ref_grad_w.index_add_(0, t_chunk[hits], h_chunk[hits])
            errors["max_abs_err_grad_weight"] = (
                (weight.grad[:vocab_rows].double() - ref_grad_w).abs().max().item()
            )
    return errors


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (path, config, mode) in this fresh process; returns the result fields."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device, mode = spec["device"], spec["mode"]
    backward = mode == "backward"
    dtype = getattr(torch, spec["dtype"])
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    fn = build_path(spec["path"], spec["cce_impl"])

    def make_step(hidden: Any, weight: Any, targets: Any) -> Callable[[], Any]:
        def step() -> Any:
            if backward:
                hidden.grad = None
                weight.grad = None
                logprobs = fn(hidden, weight, targets)
                logprobs.sum().backward()
                return logprobs.detach()
            with torch.no_grad():
                return fn(hidden, weight, targets)

        return step

    # Warm-up on tiny inputs: lazy imports, kernel selection, first-use allocations. Not on
    # CUDA when full-size warm-ups follow: there it only tuned and compiled the Triton kernels
    # for a shape never measured (V = 512 is one vocabulary split, a constant Triton compiles
    # separately: 7 more forward compiles, ~1-2 s each, in a cold --quick run).
    if not cuda or spec["warmup"] == 0:
        tiny = make_inputs(64, 64, 512, dtype, device, spec["seed"], backward)
        for _ in range(2):
            make_step(*tiny)()
        sync()
        del tiny

    n, d, v = spec["n"], spec["d"], spec["v"]
    hidden, weight, targets = make_inputs(n, d, v, dtype, device, spec["seed"], backward)
    step = make_step(hidden, weight, targets)
    result: dict[str, Any] = {"threads": torch.get_num_threads()}
    times: list[float] = []

    if cuda:
        for _ in range(spec["warmup"]):
            step()
        hidden.grad = weight.grad = None
        sync()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        sync()
        result["extra_peak_mib"] = (torch.cuda.max_memory_allocated() - baseline) / MIB
        result["baseline_mib"] = baseline / MIB
        result["peak_method"] = "torch.cuda.max_memory_allocated"
        start_event = torch.cuda.Event(enable_timing=True)
        end_event = torch.cuda.Event(enable_timing=True)
        for _ in range(spec["repeats"]):
            sync()
            start_event.record()
            logprobs = step()
            end_event.record()
            sync()
            times.append(start_event.elapsed_time(end_event) / 1000)
        result["other_processes_cores"] = None
    else:
        trim_heap()
        if reset_peak_rss():
            method = "VmHWM after clear_refs=5"
            baseline_kib = proc_status_kib("VmRSS")
        else:
            method = "ru_maxrss fallback (clear_refs not writable; may include input creation)"
            baseline_kib = proc_status_kib("VmRSS")
        cpu_before = cpu_seconds()
        for index in range(spec["repeats"]):
            start = time.perf_counter()
            logprobs = step()
            times.append(time.perf_counter() - start)
            if index == 0:
                if method.startswith("VmHWM"):
                    peak_kib = proc_status_kib("VmHWM")
                else:
                    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                result["extra_peak_mib"] = (peak_kib - baseline_kib) / 1024
        cpu_after = cpu_seconds()
        if method.startswith("VmHWM"):
            result["extra_peak_all_runs_mib"] = (proc_status_kib("VmHWM") - baseline_kib) / 1024
        result["baseline_mib"] = baseline_kib / 1024
        result["peak_method"] = method
        others = None
        if cpu_before is not None and cpu_after is not None:
            spent = (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])
            others = round(max(0.0, spent) / max(sum(times), 1e-9), 2)
        result["other_processes_cores"] = others

    result["times_ms"] = [t * 1000 for t in times]
    result["time_ms"] = statistics.median(times) * 1000
    result.update(reference_errors(hidden, weight, targets, logprobs.float(), backward))
    if backward and hidden.grad is not None:
        result["grad_dtype"] = str(hidden.grad.dtype).removeprefix("torch.")
    return result


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        result = {"status": "ok", **run_worker(spec)}
    except Exception as exc:  # reported as a row, not a crash of the whole benchmark
        oom = "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"
        status = "oom" if oom else "failed"
        result = {"status": status, "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- driver side


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
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"worker timed out after {timeout_s:g} s"}
    wall = time.perf_counter() - start
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX) :]), "worker_wall_s": round(wall, 1)}
    if done.returncode == -9:  # the kernel's OOM killer, most likely
        return {"status": "oom", "reason": "worker killed by SIGKILL (likely out of memory)"}
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "failed", "reason": f"worker exited {done.returncode}: {tail}"}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for key, dist in DISTRIBUTIONS.items():
        try:
            found[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[key] = None
    return found


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
        "versions": versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
        info["cuda"] = torch.version.cuda
    return info


def device_slug(args: argparse.Namespace) -> str:
    if args.device != "cuda":
        return "cpu"
    import torch

    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


def kernels_import_error() -> str | None:
    try:
        from evalharness.kernels.dispatch import token_logprobs  # noqa: F401
    except Exception as exc:  # ImportError, or anything the module raises while it is in flux
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


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
    from rich.table import Table

    table = Table(title="goals: fused kernel (triton) vs its peers")
    for column in ("N", "D", "V", "mode", "measure", "peer", "triton", "peer's", "result"):
        table.add_column(column, justify="right")
    verdict = {True: "[green]met[/green]", False: "[red]MISSED[/red]", None: "n/a"}
    for goal in goals:
        table.add_row(
            str(goal["n"]),
            str(goal["d"]),
            str(goal["v"]),
            goal["mode"],
            goal["measure"],
            goal["peer"],
            fmt(goal["ours"], ".1f"),
            fmt(goal["theirs"], ".1f"),
            verdict[goal["passed"]],
        )
    return table


def render_table(rows: list[dict[str, Any]], title: str, cuda: bool) -> Any:
    from rich.table import Table

    table = Table(title=title)
    columns = ["path", "N", "D", "V", "dtype", "mode", "time ms", "extra peak MiB", "vs naive"]
    columns += ["max abs err"] + (["TFLOP/s", "% peak"] if cuda else []) + ["note"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("path", "note") else "right")
    for row in rows:
        ok = row["status"] == "ok"
        errors = fmt(row.get("max_abs_err"), ".1e")
        if row.get("max_abs_err_grad_hidden") is not None:
            errors += f" / dh {row['max_abs_err_grad_hidden']:.1e}"
        if row.get("max_abs_err_grad_weight") is not None:
            errors += f" / dW {row['max_abs_err_grad_weight']:.1e}"
        cells = [
            row["path"],
            str(row["n"]),
            str(row["d"]),
            str(row["v"]),
            row["dtype"],
            row["mode"],
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
        note = row.get("reason", "") if not ok else ""
        if ok and (row.get("other_processes_cores") or 0.0) > 0.2:
            note = f"busy: others used {row['other_processes_cores']:.2f} cores"
        cells.append(note)
        table.add_row(*cells)
    return table


def render_checks(checks: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=f"check: chunked extra peak <= naive extra peak / {CHECK_FACTOR}")
    for column in ("N", "D", "V", "dtype", "mode", "chunked MiB", "naive MiB", "limit", "result"):
        table.add_column(column, justify="right")
    for check in checks:
        verdict = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "n/a"}
        naive = fmt(check["naive_extra_peak_mib"], ".1f")
        if check["naive_basis"] != "measured":
            naive += " (lower bound)"
        table.add_row(
            str(check["n"]),
            str(check["d"]),
            str(check["v"]),
            check["dtype"],
            check["mode"],
            fmt(check.get("chunked_extra_peak_mib"), ".1f"),
            naive,
            fmt(check.get("limit_mib"), ".1f"),
            verdict[check["passed"]],
        )
    return table


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
    out = args.out or Path(f"benchmarks/results/scoring-{device_slug(args)}.json")

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
            if cuda and args.peak_tflops:
                row["frac_peak"] = row["tflops"] / args.peak_tflops

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
    methods = sorted({r["peak_method"] for r in rows if r.get("peak_method")})
    if methods:
        console.print(f"peak memory measured by: {'; '.join(methods)}")
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
    if args.dry_run:
        console.print(f"dry run: nothing measured, {out} not written")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")
    busy = [r for r in rows if (r.get("other_processes_cores") or 0.0) > 0.2]
    if busy:
        console.print(
            f"[yellow]warning: other processes used CPU during {len(busy)} timed run(s) "
            "(other_processes_cores); those times are unreliable[/yellow]"
        )
    failed = [r for r in rows if r["status"] == "failed"]
    check_failed = any(c["passed"] is False for c in checks)
    return 1 if failed or check_failed else 0


if __name__ == "__main__":
    sys.exit(main())
