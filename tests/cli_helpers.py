"""Running the CLI in-process or as a real subprocess, the way users and CI do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


MINI = ["--tasks", "mt_bench", "--task-arg", "mt_bench.data=builtin"]


def tiny_run_args(model_dir: Path, store: Path, *extra: str, max_new_tokens: int = 12) -> list[str]:
    """`run` on the tiny model over the authored MT-Bench set, into `store`."""
    return [
        "run",
        "--model",
        f"hf:{model_dir}",
        *MINI,
        "--task-arg",
        f"mt_bench.max_new_tokens={max_new_tokens}",
        "--store",
        str(store),
        *extra,
    ]
