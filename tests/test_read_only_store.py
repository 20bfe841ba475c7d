"""A run store nobody may write (a CI artifact, a shared folder, a read-only mount) still reads.

Read commands open it without writing anything, to it or beside it; write commands say in one
line that it is read-only, naming it. Each command runs as a real subprocess that cannot write
the folder: as root (which ignores file modes) the child drops its capabilities to override
them, so the test means the same thing on a laptop, in CI and in a container.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env
from report_stores import build_store

#: prctl(PR_CAPBSET_DROP, cap): CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER.
PR_CAPBSET_DROP = 24
FILE_CAPABILITIES = (1, 2, 3)


def _without_file_capabilities() -> None:
    """In the child before exec: root keeps its uid but loses the right to ignore file modes."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in FILE_CAPABILITIES:
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unprivileged(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_without_file_capabilities,
    )


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A store of two complete runs in a folder made read-only, file and folder."""
    folder = tmp_path_factory.mktemp("shared")
    store = folder / "store.sqlite"
    run_ids, _ = build_store(store, n_runs=2, samples_per_task=3, tasks=("alpaca_eval",))
    store.chmod(0o444)
    folder.chmod(0o555)
    probe = unprivileged("-c", f"open({str(store)!r}, 'r+b')")
    if probe.returncode == 0:
        folder.chmod(0o755)
        pytest.skip("cannot make a folder read-only here (root without capability control)")
    yield {"store": store, "folder": folder, "runs": run_ids}
    folder.chmod(0o755)
    store.chmod(0o644)


READS = {
    "runs": ["runs"],
    "show": ["show", "{a}"],
    "compare": ["compare", "{a}", "{b}"],
    "report": ["report", "--out", "{out}/site"],
    "export": ["export", "{b}", "--format", "alpaca-eval", "--out", "{out}/export"],
}


@pytest.mark.parametrize("command", list(READS))
def test_read_commands_work_on_a_read_only_store(
    command: str, shared: dict, tmp_path: Path
) -> None:
    a, b = shared["runs"]
    places = {"a": a, "b": b, "out": str(tmp_path)}
    argv = [arg.format(**places) for arg in READS[command]]
    before = fingerprint(shared["folder"])
    done = unprivileged("-m", "evalharness", *argv, "--store", str(shared["store"]))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "not a run store" not in done.stderr
    if command in ("runs", "show", "compare"):
        assert b[:12] in done.stdout or a[:12] in done.stdout
    assert fingerprint(shared["folder"]) == before  # nothing written, not even -wal or -shm


@pytest.mark.parametrize("name", ["store.sqlite", "new.sqlite"])
def test_write_commands_say_the_store_is_read_only(
    name: str, shared: dict, tiny_model_dir: Path
) -> None:
    store = shared["folder"] / name
    before = fingerprint(shared["folder"])
    done = unprivileged(
        "-m",
        "evalharness",
        "run",
        "--model",
        f"hf:{tiny_model_dir}",
        "--tasks",
        "driftcaps",
        "--store",
        str(store),
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"evalharness: error: --store {store} is read-only"), line
    assert fingerprint(shared["folder"]) == before


def test_a_missing_store_is_not_created_by_a_read_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evalharness.cli import main

    store = tmp_path / "nowhere.sqlite"
    assert main(["runs", "--store", str(store)]) == 2
    assert f"no run store at {store}" in capsys.readouterr().err
    assert not store.exists()
