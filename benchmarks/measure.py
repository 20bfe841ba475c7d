"""Measurement helpers the benchmark scripts share: timed repeats, peak memory (RSS or the CUDA
allocator's), CPU contention, versions and machine facts, worker processes with deadlines and
the one-JSON-line protocol their results come back in.

Every benchmark measures the same way through these, so its numbers compare with the others'.
Standard library only at import (torch is imported inside the functions that need it), so a
benchmark's worker running in another environment (TRL's venv) can import it from beside the
script.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
MIB = 1024**2


def proc_status_kib(field: str) -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Collect garbage and give freed heap pages back, so reusing them cannot hide a peak."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds used by the whole machine, by this process) so far; None off Linux.

    Their difference over a timed region is CPU time other processes took from us -- the
    direct sign of a contended measurement, unlike the lagging load average.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    machine = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return machine, own.user + own.system


def other_processes_cores(
    before: tuple[float, float] | None,
    after: tuple[float, float] | None,
    seconds: float,
    own_seconds: float | None = None,
) -> float | None:
    """Cores other processes kept busy, on average, between two `cpu_seconds()` readings
    `seconds` of timed work apart; None off Linux. `own_seconds` replaces this process's CPU
    time when the work ran in child processes too (vLLM's engine)."""
    if before is None or after is None:
        return None
    own = after[1] - before[1] if own_seconds is None else own_seconds
    spent = (after[0] - before[0]) - own
    return round(max(0.0, spent) / max(seconds, 1e-9), 2)


def timed_repeats(
    work: Callable[[], T], repeats: int, after_each: Callable[[int], None] | None = None
) -> tuple[list[float], T]:
    """Wall seconds of each of `repeats` calls of `work` (at least one), and the last result.

    `after_each(index)` runs after each call, outside the timed region (a peak reading).
    """
    times: list[float] = []
    for index in range(max(1, repeats)):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
        if after_each is not None:
            after_each(index)
    return times, result


def cuda_timed_repeats(work: Callable[[], T], repeats: int) -> tuple[list[float], T]:
    """Seconds of each of `repeats` calls of `work` by CUDA events, each bracketed by a
    synchronisation, so queued work from before is not counted and all of its own is."""
    import torch

    start_event = torch.cuda.Event(enable_timing=True)
    end_event = torch.cuda.Event(enable_timing=True)
    times: list[float] = []
    for _ in range(max(1, repeats)):
        torch.cuda.synchronize()
        start_event.record()
        result = work()
        end_event.record()
        torch.cuda.synchronize()
        times.append(start_event.elapsed_time(end_event) / 1000)
    return times, result


def throughput(durations: Sequence[float], tokens: int) -> dict[str, Any]:
    """The median pass's seconds, every pass's, and tokens/s at the median (generation rows)."""
    seconds = statistics.median(durations)
    return {
        "seconds": round(seconds, 3),
        "seconds_all_repeats": [round(d, 3) for d in durations],
        "tokens_per_s": round(tokens / seconds, 2),
    }


class PeakMemory:
    """Memory above a baseline at its peak over a region: the CUDA allocator's statistics on a
    GPU; on a CPU VmHWM after resetting it through /proc/self/clear_refs, or `ru_maxrss` (a peak
    since the process started) where that cannot be written.

    `start()` trims the heap first, so freed pages reused by the region cannot hide its peak.
    """

    def __init__(self, cuda: bool, fallback_method: str) -> None:
        self.cuda = cuda
        self.fallback_method = fallback_method
        self.method = ""
        self.baseline_mib = 0.0

    def start(self) -> None:
        trim_heap()
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
            self.baseline_mib = torch.cuda.memory_allocated() / MIB
            return
        self.method = "VmHWM after clear_refs=5" if reset_peak_rss() else self.fallback_method
        self.baseline_mib = proc_status_kib("VmRSS") / 1024

    def peak_mib(self) -> float:
        """The peak since `start()` (absolute, not above the baseline)."""
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / MIB
        if self.method.startswith("VmHWM"):
            return proc_status_kib("VmHWM") / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def extra_peak_mib(self) -> float:
        return self.peak_mib() - self.baseline_mib


def package_versions(
    names: Iterable[str] | Mapping[str, str], missing: str | None = None
) -> dict[str, str | None]:
    """Installed version of each distribution (`missing` where absent); a mapping gives the key
    to record each distribution under."""
    pairs = names.items() if isinstance(names, Mapping) else ((n, n) for n in names)
    found: dict[str, str | None] = {}
    for key, distribution in pairs:
        try:
            found[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[key] = missing
    return found


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_slug() -> str:
    """The first GPU's name as a file-name part (`nvidia-h100-80gb-hbm3`)."""
    import torch

    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


def machine_info() -> dict[str, Any]:
    """Facts that decide CPU throughput, recorded next to the numbers."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
    }


def one_line(exc: BaseException) -> str:
    """`Type: message`, first line only: a failure's reason in a table cell."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def print_worker_result(prefix: str, run: Callable[[], dict[str, Any]], *, oom: bool = True) -> int:
    """A worker's end: `run()`'s fields (status `ok`) or its failure (`oom` when `oom` and it
    ran out of memory, else `failed`, with a one-line reason) as one `prefix` JSON line on
    stdout, what `run_json_worker` reads. Never raises: a failure is a row of the table."""
    try:
        result = {"status": "ok", **run()}
    except Exception as exc:
        traceback.print_exc()
        status = "oom" if oom and is_out_of_memory(exc) else "failed"
        result = {"status": status, "reason": one_line(exc)}
    print(prefix + json.dumps(result), flush=True)
    return 0


def worker_env(repo: Path, **extra: str) -> dict[str, str]:
    """This environment for a worker process: offline, quiet tokenizers, the repository first
    on PYTHONPATH (a worker in another venv imports the project from the checkout), `extra`."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")])),
        **extra,
    )
    return env


def run_process(
    command: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log: Path | None = None,
) -> tuple[int | None, float, str]:
    """Run `command` to its end or its deadline: (exit code or None on timeout, seconds, output).

    It runs in a process group of its own, so a timeout ends its workers too (a benchmark that
    starts one process per measurement would otherwise leave them holding the GPU). Its stdout
    and stderr are appended to `log` when one is given (the text returned is then empty), else
    returned, stderr after stdout.
    """
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(log, "a")) if log is not None else None
        process = subprocess.Popen(
            list(command),
            stdout=sink or subprocess.PIPE,
            stderr=sink or subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        try:
            out, errors = process.communicate(timeout=timeout_s)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, errors = process.communicate()
            code = None
    text = (out or "") + (errors or "")
    return code, time.perf_counter() - start, text


def run_json_worker(
    command: Sequence[str],
    prefix: str,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> dict[str, Any]:
    """One worker process whose result is its last stdout line starting with `prefix` (JSON).

    Always a dict with `status`: the worker's own (`ok` unless it says otherwise), or `failed`,
    `timeout` or `oom` with a one-line `reason` and the end of its output, never an exception:
    one side failing must not lose the other's numbers.
    """
    code, seconds, text = run_process(command, timeout_s=timeout_s, env=env, cwd=cwd)
    wall = {"worker_wall_s": round(seconds, 1)}
    tail = text.strip().splitlines()[-20:]
    for line in reversed(text.splitlines()):
        if line.startswith(prefix):
            result = {"status": "ok", **json.loads(line[len(prefix) :]), **wall}
            return result if result["status"] == "ok" else {**result, "tail": tail}
    if code is None:
        return {"status": "timeout", "reason": f"worker timed out after {timeout_s:g} s", **wall}
    if code == -signal.SIGKILL:
        return {"status": "oom", "reason": "worker killed by SIGKILL (likely out of memory)"}
    last = tail[-1] if tail else "no output"
    return {"status": "failed", "reason": f"worker exited {code}: {last}", "tail": tail, **wall}
