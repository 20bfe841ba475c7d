"""Measurement helpers the benchmark scripts share: peak RSS, heap trimming, CPU contention.

Standard library only, so a benchmark's worker running in another environment (TRL's venv)
can import it from beside the script.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
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
