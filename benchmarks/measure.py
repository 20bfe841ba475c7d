"""Measurement helpers the benchmark scripts share: peak RSS, heap trimming, CPU contention,
worker processes with deadlines.

Standard library only, so a benchmark's worker running in another environment (TRL's venv)
can import it from beside the script.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """A table cell: `-` for a missing figure."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


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
