"""Whole-CLI runs as users make them: the real default model, and a model behind `serve`."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_helpers import free_port, run_cli, run_json, spawn_cli, wait_until_healthy, write_lines


@pytest.mark.slow
def test_default_model_run_gives_real_scores_and_caches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The offline suite on the built-in SmolLM2, 2 samples per task, answers kept short."""
    args = ["run", "--limit", "2", "--store", str(tmp_path / "runs.sqlite")]
    for option in ("mt_bench", "alpaca_eval", "driftcaps"):
        args += ["--task-arg", f"{option}.max_new_tokens=24"]
    first = run_json(capsys, *args)
    assert set(first["tasks"]) == {
        "mt_bench",
        "alpaca_eval",
        "driftcaps",
        "liconbench",
        "truematch",
    }
    entry = first["tasks"]["mt_bench"]
    assert entry["n"] == 2 and entry["failures"] == 0
    assert entry["counts"]["ratings"] == 4
    assert 1.0 < entry["metrics"]["score"] < 10.0
    assert set(entry["metrics"]) >= {"score", "score_turn1", "score_turn2", "writing", "roleplay"}
    assert first["tasks"]["alpaca_eval"]["metrics"]["n_total"] == 2
    assert first["tasks"]["driftcaps"]["counts"] == {"unsafe": 1, "safe": 1}
    assert {"round_1", "round_2"} <= set(first["tasks"]["liconbench"]["metrics"])
    assert first["tasks"]["truematch"]["metrics"]["oracle_r_at_1"] == 1.0
    # Model: MT-Bench 2x2 turns, AlpacaEval 2, safety 2, LIConBench 2 items x 2 rounds,
    # TrueMatch 2. Judge: MT-Bench 4 verdicts x 10 rating probabilities, AlpacaEval 2 x P(A),
    # P(B); safety is judged by rules, at no call.
    assert first["calls_made"] == {"model": 4 + 2 + 2 + 4 + 2, "judge": 40 + 4}
    again = run_json(capsys, *args)
    assert again["calls_made"] == {"model": 0, "judge": 0}
    assert again["tasks"] == first["tasks"]


@contextlib.contextmanager
def serving(model_dir: Path, *extra: str) -> Iterator[str]:
    """`evalharness serve` as a real subprocess on a free loopback port; yields the /v1 URL.

    Readiness is polled on /health, the one route that never needs a key.
    """
    port = free_port()
    process = spawn_cli(
        "serve", "--model", f"hf:{model_dir}", "--port", str(port), "--served-name", "tiny", *extra
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url)
        yield f"{url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def served_tiny_model(tiny_model_dir: Path) -> Iterator[str]:
    with serving(tiny_model_dir) as url:
        yield url


def test_run_against_evalharness_serve_over_http(
    served_tiny_model: str, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    args = [
        "run",
        "--model",
        "openai:tiny",
        "--base-url",
        served_tiny_model,
        "--tasks",
        "mt_bench",
        "--task-arg",
        "mt_bench.data=builtin",
        "--task-arg",
        "mt_bench.max_new_tokens=8",
        "--judge",
        "openai:tiny",
        "--judge-base-url",
        served_tiny_model,
        "--judge-max-tokens",
        "16",
        "--limit",
        "2",
        "--store",
        str(store),
    ]
    first = run_json(capsys, *args)
    entry = first["tasks"]["mt_bench"]
    assert entry["n"] == 2
    # A random tiny model rarely writes [[N]]: unparsed verdicts are counted, not dropped.
    assert entry["failures"] + entry["counts"]["ratings"] == 4
    # Each unparsed verdict is asked again (twice by default) before it counts as a failure.
    judging = first["judging"]
    assert judging["parse_failures"] == entry["failures"]
    assert judging["parse_retries"] <= 2 * 4 and judging["parse_retries"] >= 2 * entry["failures"]
    assert first["calls_made"] == {"model": 4, "judge": 4 + judging["parse_retries"]}
    shown = run_json(capsys, "show", first["run_id"], "--store", str(store))
    assert shown["provenance"]["model"]["base_url"] == served_tiny_model
    assert "api_key" not in json.dumps(shown["provenance"]).lower()
    again = run_json(capsys, *args)
    assert again["calls_made"] == {"model": 0, "judge": 0}


def test_serve_with_a_key_variable_requires_the_bearer_key(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every route but /health answers 401 (OpenAI's error JSON) without the right key."""
    key = "sk-serve-test-0d5e2b"
    monkeypatch.setenv("EVALHARNESS_TEST_SERVE_KEY", key)  # the subprocess inherits it
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with serving(tiny_model_dir, "--api-key-env", "EVALHARNESS_TEST_SERVE_KEY") as url:
        root = url.removesuffix("/v1")
        assert httpx.get(f"{root}/health", timeout=10).status_code == 200
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": key}):
            for response in (
                httpx.get(f"{url}/models", headers=headers, timeout=10),
                httpx.post(f"{url}/chat/completions", json=chat, headers=headers, timeout=10),
            ):
                assert response.status_code == 401, response.text
                error = response.json()["error"]
                assert error["code"] == "invalid_api_key" and key not in response.text
        good = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{url}/models", headers=good, timeout=10).status_code == 200
        answer = httpx.post(f"{url}/chat/completions", json=chat, headers=good, timeout=60)
        assert answer.status_code == 200, answer.text
        # The openai: client reaches it only with the key named explicitly.
        rows = write_lines(tmp_path / "rows.jsonl", ['{"context": "a", "continuation": " b"}'])
        score = ["score", "--model", "openai:tiny", "--base-url", url, "--input", str(rows)]
        code, _, err = run_cli(capsys, *score, "--api-key-env", "EVALHARNESS_TEST_SERVE_KEY")
        assert code == 0, err
        monkeypatch.setenv("OPENAI_API_KEY", key)  # never sent to a server not api.openai.com
        code, _, err = run_cli(capsys, *score)
        assert code == 2 and "(HTTP 401)" in err and key not in err


@pytest.mark.slow
def test_banking77_rounds_on_the_default_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real BANKING77 at rounds 1 and 2 (77 and 154 demonstrations) on SmolLM2-135M."""
    from conftest import shared_data

    banking = shared_data("banking77/train.csv").parent
    result = run_json(
        capsys, "run", "--tasks", "liconbench", "--limit", "2",
        "--task-arg", "liconbench.dataset=banking77", "--task-arg", f"liconbench.data={banking}",
        "--task-arg", "liconbench.rounds=1,2", "--store", str(tmp_path / "runs.sqlite"),
    )  # fmt: skip
    metrics = result["tasks"]["liconbench"]["metrics"]
    assert metrics["metric"] == "accuracy"
    assert metrics["n_demos_round_1"] == 77 and metrics["n_demos_round_2"] == 154
    assert 0 < metrics["prompt_tokens_round_1"] < metrics["prompt_tokens_round_2"]
    assert 0.0 <= metrics["round_1"] <= 1.0 and 0.0 <= metrics["round_2"] <= 1.0
    assert result["calls_made"]["model"] == 4
