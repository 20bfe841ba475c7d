"""Running the CLI in-process or as a real subprocess, the way users and CI do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from evalharness.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def spawn_cli(*argv: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "evalharness", *argv],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_until_healthy(process: subprocess.Popen[str], url: str) -> None:
    """Poll /health until the server answers (it listens only once the model is loaded).

    /health is the one route that never needs a key; a server that exits first fails the test
    with its stderr.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read() if process.stderr else "serve exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def task_flags(task: str, **task_args: object) -> list[str]:
    """`--tasks TASK --task-arg TASK.KEY=VALUE ...`, in the order the keywords are given."""
    flags = ["--tasks", task]
    for key, value in task_args.items():
        flags += ["--task-arg", f"{task}.{key}={value}"]
    return flags


MINI = task_flags("mt_bench", data="builtin")


def task_run_args(
    model_dir: Path, store: Path | None, task: str, *extra: str, **task_args: object
) -> list[str]:
    """`run` on a local checkpoint over one task (its `--task-arg`s as keywords), into `store`
    (None: no `--store`, so the run goes to the default store, `EVALHARNESS_STORE`)."""
    where = [] if store is None else ["--store", str(store)]
    return ["run", "--model", f"hf:{model_dir}", *task_flags(task, **task_args), *where, *extra]


def tiny_run_args(
    model_dir: Path, store: Path | None, *extra: str, max_new_tokens: int = 12
) -> list[str]:
    """`run` on the tiny model over the authored MT-Bench set, into `store`."""
    return task_run_args(
        model_dir, store, "mt_bench", *extra, data="builtin", max_new_tokens=max_new_tokens
    )


def pipeline_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], evaluate_line: str
) -> tuple[Path, str]:
    """Run `pipeline` on an SFT config whose line 2 is `evaluate_line`; it must stop with exit 2
    and one line on stderr before any training. Returns the config's path and that line."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "train: {method: sft, model: hf:placeholder, data: rows.jsonl, out: runs/sft}\n"
        f"{evaluate_line}\n"
        "gate:\n  - {metric: driftcaps.balanced_safety_accuracy, max_drop: 0.05}\n"
    )
    code, _, err = run_cli(capsys, "pipeline", str(config))
    assert code == 2
    (message,) = err.strip().splitlines()
    return config, message
