"""The context the steps of benchmarks/gpu_suite.py run in: the suite's settings, environment
and summary, one step's view of them (its own environment copy, log and deadline), and the
exceptions by which a step says why it has no result.

Apart from the steps themselves so that a step reads as what it runs, not how it is run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from measure import machine_info, run_process  # beside this script

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
#: The suite's own script: the steps run it again for the jobs it does in a child process.
SCRIPT = BENCH / "gpu_suite.py"
SUMMARY = "gpu_suite.json"
LOG = "gpu_suite.log"


@dataclass(frozen=True)
class Step:
    """One step of the suite: its name, its own time limit and what it runs."""

    name: str
    budget_s: float
    run: Callable[[StepRun, float], dict[str, Any]]
    needs_model: bool = False


class StepFailed(Exception):
    """A step's one-line reason for not producing its result."""


class StepTimeout(StepFailed):
    pass


class Suite:
    """The run's settings, its environment for child processes and its summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.smoke: bool = args.smoke
        self.device = "cpu" if args.smoke else "cuda"
        self.out: Path = args.out
        self.work = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
        self.log = self.out / LOG
        self.python = sys.executable
        self.env = dict(os.environ)
        self.env.update(
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            HF_DATASETS_CACHE=str(self.work / "hf-datasets"),
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            TQDM_DISABLE="1",
            EVALHARNESS_STORE=str(self.work / "store.sqlite"),
        )
        self.env.pop("TRITON_INTERPRET", None)  # the compiled kernel is what is measured
        self.model: dict[str, Any] | None = None
        self.summary: dict[str, Any] = {
            "suite": "gpu_suite",
            "mode": "smoke" if self.smoke else "gpu",
            "device": self.device,
            "started_at": now(),
            "budget_s": args.budget,
            "machine": machine_info(),
            "steps": {},
        }

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / SUMMARY).write_text(json.dumps(self.summary, indent=2) + "\n")


class StepRun:
    """One step's view of the suite: its own copy of the environment and its own log file,
    appended to the suite's log when the step ends (smoke mode runs steps side by side)."""

    def __init__(self, suite: Suite, name: str, limit: float) -> None:
        self.suite = suite
        self.deadline = time.monotonic() + limit
        self.smoke = suite.smoke
        self.device = suite.device
        self.python = suite.python
        self.work = suite.work
        self.env = dict(suite.env)
        self.log = suite.work / f"{name}.log"

    def run(self, command: Sequence[str], label: str, cwd: Path = REPO) -> int:
        """A child process in the step's environment, stopped at the step's deadline; its
        output goes to the step's log."""
        timeout_s = max(1.0, self.deadline - time.monotonic())
        with open(self.log, "a") as log:
            log.write(f"\n===== {label}: {' '.join(command)}\n")
        code, _, _ = run_process(command, timeout_s=timeout_s, env=self.env, cwd=cwd, log=self.log)
        if code is None:
            raise StepTimeout(f"{label} did not finish within its {timeout_s:.0f} s")
        return code

    def model_dir(self) -> str:
        assert self.suite.model is not None
        return self.suite.model["dir"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path, label: str) -> dict[str, Any]:
    if not path.exists():
        raise StepFailed(f"{label} wrote no result ({path.name}); see {LOG}")
    return json.loads(path.read_text())
