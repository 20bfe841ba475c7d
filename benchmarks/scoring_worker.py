"""One measurement of benchmarks/scoring.py, run in a fresh interpreter (`scoring.py --worker
SPEC`): one path at one (N, D, V) in one mode, its time, extra peak memory and errors.

A process per measurement keeps one path's allocations, caches and retained heap out of the
next one's peak; see scoring.py's docstring for how peak and time are taken.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import Any

from measure import (  # beside this script
    PeakMemory,
    cpu_seconds,
    cuda_timed_repeats,
    other_processes_cores,
    print_worker_result,
    timed_repeats,
)
from scoring_paths import build_path, make_inputs, reference_errors

RESULT_PREFIX = "SCORING_RESULT "
CPU_FALLBACK = "ru_maxrss fallback (clear_refs not writable; may include input creation)"


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
    peak = PeakMemory(cuda, CPU_FALLBACK)

    if cuda:
        for _ in range(spec["warmup"]):
            step()
        hidden.grad = weight.grad = None
        sync()
        peak.start()
        step()
        sync()
        result["extra_peak_mib"] = peak.extra_peak_mib()
        result["baseline_mib"] = peak.baseline_mib
        result["peak_method"] = peak.method
        times, logprobs = cuda_timed_repeats(step, spec["repeats"])
        result["other_processes_cores"] = None
    else:
        peak.start()

        def first_peak(index: int) -> None:
            if index == 0:  # each run allocates afresh: the first one's peak is representative
                result["extra_peak_mib"] = peak.extra_peak_mib()

        cpu_before = cpu_seconds()
        times, logprobs = timed_repeats(step, spec["repeats"], after_each=first_peak)
        cpu_after = cpu_seconds()
        if peak.method.startswith("VmHWM"):
            result["extra_peak_all_runs_mib"] = peak.extra_peak_mib()
        result["baseline_mib"] = peak.baseline_mib
        result["peak_method"] = peak.method
        result["other_processes_cores"] = other_processes_cores(cpu_before, cpu_after, sum(times))

    result["times_ms"] = [t * 1000 for t in times]
    result["time_ms"] = statistics.median(times) * 1000
    result.update(reference_errors(hidden, weight, targets, logprobs.float(), backward))
    if backward and hidden.grad is not None:
        result["grad_dtype"] = str(hidden.grad.dtype).removeprefix("torch.")
    return result


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    return print_worker_result(RESULT_PREFIX, lambda: run_worker(spec))
