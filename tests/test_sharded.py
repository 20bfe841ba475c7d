"""`--workers N`: a run's requests answered by Ray actors give the single-process run exactly.

Real Ray, local, two workers on the tiny model. The same run with and without `--workers` must
have one run id, the same answers and metrics, one stored copy of every response, and a re-run
must not even start Ray.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import tiny_run_args

from evalharness.backends.spec import parse_model_spec
from evalharness.cli import main
from evalharness.errors import BackendError, InputError

ray = pytest.importorskip("ray")

# Two requests per worker batch: a chunk of four is split over both workers.
RUN_EXTRA = ("--limit", "3", "--batch-size", "2")


def run_json(*argv: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--json"])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


def stored_responses(store: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(store)
    try:
        rows = db.execute("SELECT cache_key, request_json, result_json FROM responses").fetchall()
    finally:
        db.close()
    return sorted(rows)


@pytest.fixture(scope="module")
def ray_session() -> Any:
    """Ray is shut down when the module ends, whatever the tests did."""
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, ray_session: Any
) -> dict[str, Any]:
    """The same run, once in this process and once over two Ray workers, in separate stores."""
    root = tmp_path_factory.mktemp("sharded")
    single_store, sharded_store = root / "single.sqlite", root / "sharded.sqlite"
    single = run_json(*tiny_run_args(tiny_model_dir, single_store, *RUN_EXTRA))
    sharded = run_json(*tiny_run_args(tiny_model_dir, sharded_store, *RUN_EXTRA, "--workers", "2"))
    print(f"\nworkers=1: {single['seconds']:.1f}s  workers=2: {sharded['seconds']:.1f}s")
    return {
        "model_dir": tiny_model_dir,
        "single": single,
        "sharded": sharded,
        "single_store": single_store,
        "sharded_store": sharded_store,
    }


def test_two_workers_give_the_single_process_run(runs: dict[str, Any]) -> None:
    single, sharded = runs["single"], runs["sharded"]
    assert sharded["run_id"] == single["run_id"]
    assert sharded["tasks"] == single["tasks"]  # metrics, CIs, counts
    assert sharded["calls_made"] == single["calls_made"]
    assert single["calls_made"]["model"] > 4  # more than one chunk of 2 x 2 requests
    # The same cache keys with the same answers: the cache is shared, not merely similar.
    assert stored_responses(runs["sharded_store"]) == stored_responses(runs["single_store"])


def test_the_store_holds_each_response_once(runs: dict[str, Any]) -> None:
    rows = stored_responses(runs["sharded_store"])
    requests = [request for _, request, _ in rows]
    assert len(set(requests)) == len(requests)
    assert runs["sharded"]["calls_made"]["model"] == len(rows)
    db = sqlite3.connect(runs["sharded_store"])
    try:
        (links,) = db.execute(
            "SELECT COUNT(*) FROM links WHERE run_id = ? AND kind = 'response'",
            (runs["sharded"]["run_id"],),
        ).fetchone()
        (verdict_rows,) = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()
    finally:
        db.close()
    assert links == len(rows)  # every answer of the run is linked, none twice
    assert verdict_rows == runs["sharded"]["judging"]["judged"]


def test_worker_errors_are_one_line_and_name_the_worker(runs: dict[str, Any]) -> None:
    from evalharness.backends.sharded import ShardedBackend
    from evalharness.engine.requests import RewardRequest

    backend = ShardedBackend(parse_model_spec(f"hf:{runs['model_dir']}", workers=2))
    try:
        with pytest.raises(BackendError) as failed:
            backend.forward("no_such_method", [object(), object()])  # an error inside the actor
        message = str(failed.value)
        assert "\n" not in message
        assert message.startswith("worker 0 (pid ")
        assert "AttributeError" in message and "no_such_method" in message
        # An error the request caused stays an input error (exit code 2), worker unnamed.
        with pytest.raises(InputError, match="not a reward model"):
            backend.reward([RewardRequest(messages=())])
    finally:
        backend.close()


def test_a_cached_rerun_makes_no_calls_and_never_starts_ray(runs: dict[str, Any]) -> None:
    ray.shutdown()
    store = runs["sharded_store"]
    before = stored_responses(store)
    again = run_json(*tiny_run_args(runs["model_dir"], store, *RUN_EXTRA, "--workers", "2"))
    assert not ray.is_initialized()
    assert again["calls_made"] == {"model": 0, "judge": 0}
    assert again["run_id"] == runs["single"]["run_id"]
    assert again["tasks"] == runs["single"]["tasks"]
    assert stored_responses(store) == before


def test_workers_refuse_remote_backends_and_a_missing_ray(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [
                "run",
                "--model",
                "openai:gpt-4o",
                "--tasks",
                "mt_bench",
                "--workers",
                "2",
                "--store",
                str(tmp_path / "s.sqlite"),
            ]
        )
    assert code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "--workers is for hf:/builtin:/vllm:/rm:/clf:" in lines[0]

    from evalharness.backends import load_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(InputError, match=r"pip install 'evalharness\[ray\]'"):
        load_backend(parse_model_spec(f"hf:{tiny_model_dir}", workers=2))
