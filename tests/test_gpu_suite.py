"""`make test-gpu`'s script in smoke mode: every step runs on tiny shapes on the CPU.

CI has no GPU, so this is what keeps the prepared GPU run from rotting between the sessions
that have one: each step must still start, run its benchmark or tests and land in the one
JSON summary, with a result, or a reason where it cannot have one here (no CUDA for the GPU
tests, no vLLM, TRL's sides left to the GPU run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = ["setup", "models", "tests", "kernel", "generation", "mc_scoring", "dpo"]
STATUSES = {"ok", "failed", "timeout", "skipped"}


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("lm_eval")
    out = tmp_path_factory.mktemp("gpu-suite")
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_SUITE_DEVICE")}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    path = out / "gpu_suite.json"
    assert path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "gpu_suite.log").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["gpu_suite.json", "gpu_suite.log"]
    result = json.loads(path.read_text())
    result["exit_code"] = done.returncode
    return result


def test_every_step_reports_a_result_or_a_reason(summary: dict[str, Any]) -> None:
    assert summary["mode"] == "smoke" and summary["device"] == "cpu"
    assert list(summary["steps"]) == STEPS
    for name, step in summary["steps"].items():
        assert step["status"] in STATUSES, name
        if step["status"] == "ok":
            assert isinstance(step.get("result"), dict) and step["result"], name
        else:
            assert isinstance(step["reason"], str) and step["reason"], name
    # Here everything the steps need is installed: each of them must have run.
    failed = {n: s["reason"] for n, s in summary["steps"].items() if s["status"] != "ok"}
    assert not failed and summary["exit_code"] == 0, failed


def test_gpu_tests_skip_with_their_reason_on_the_cpu(summary: dict[str, Any]) -> None:
    tests = summary["steps"]["tests"]["result"]
    assert tests["passed"] == tests["failed"] == 0 and tests["skipped"] == len(tests["tests"]) > 0
    assert {t["message"] for t in tests["tests"]} == {"needs a CUDA device"}
    names = " ".join(t["test"] for t in tests["tests"])
    for what in ("kernel", "cuda_agrees_with_the_cpu", "serve", "dpo_step"):
        assert what in names


def test_benchmarks_land_their_numbers_in_the_summary(summary: dict[str, Any]) -> None:
    steps = {name: step["result"] for name, step in summary["steps"].items()}
    assert steps["models"]["dir"] and steps["models"]["weights"]
    assert steps["setup"]["versions"]["torch"] and steps["setup"]["cuda_available"] is False

    kernel = steps["kernel"]["results"]
    assert kernel and all(row["status"] == "ok" and row["time_ms"] > 0 for row in kernel)

    generation = {row["backend"]: row for row in steps["generation"]["results"]}
    assert generation["hf"]["tokens_per_s"] > 0 and generation["hf"]["device"] == "cpu"
    vllm = generation.get("vllm", {})
    assert vllm.get("tokens_per_s", 0) > 0 or vllm.get("reason") == "vllm not installed"

    scoring = steps["mc_scoring"]
    assert {side: row["status"] for side, row in scoring["sides"].items()} == {
        "lm-eval": "ok",
        "ours": "ok",
    }
    assert scoring["questions_compared"] == scoring["questions"] > 0
    assert scoring["identical_acc"] is True and scoring["ratio_ours_vs_lm_eval"] > 0
    same_requests = scoring["requests"]["ours vs lm-eval"]
    assert same_requests["compared"] == 4 * scoring["questions"]
    assert same_requests["is_greedy_mismatches"] == 0

    dpo = {row["side"]: row for row in steps["dpo"]["results"]}
    assert dpo["ours"]["status"] == "ok" and dpo["ours"]["median_step_s"] > 0
    assert {dpo[s]["status"] for s in ("trl-ref", "trl-precomputed")} == {"skipped"}
    assert all(dpo[s]["reason"] for s in ("trl-ref", "trl-precomputed"))
