"""Inputs longer than a model's context are cut by a stated policy, marked, counted and warned
about; never silent. The tiny models are copied with a 64-token context in their config."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_json, task_run_args, write_lines
from cli_helpers import tiny_run_args as tiny_args

from evalharness.backends import load_backend
from evalharness.backends.context import (
    causal_lm_limit,
    classifier_limit,
    fit_prompt,
    fit_scored,
)
from evalharness.backends.hf import HFBackend
from evalharness.backends.reward import RewardModelBackend
from evalharness.backends.spec import parse_model_spec
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateResult,
    Message,
    RewardRequest,
    RewardResult,
    SamplingParams,
    ScoreRequest,
    result_from_json,
    result_to_json,
)
from evalharness.engine.scoring import TRUNCATED_COUNT
from evalharness.errors import InputError

LIMIT = 64
#: Far more than LIMIT tokens with the tiny tokenizer.
LONG_TEXT = " ".join(["the water is good and the cat runs fast"] * 20)


def with_context(source: Path, target: Path, limit: int = LIMIT) -> Path:
    """A copy of a tiny checkpoint whose config states a `limit`-token context."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["max_position_embeddings"] = limit
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def short_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_context(tiny_model_dir, tmp_path_factory.mktemp("short") / "model")


@pytest.fixture(scope="module")
def short_reward_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_reward_model

    built = build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "rm")
    return with_context(built, built.parent / "short-rm")


# -- the policy as pure functions ----------------------------------------------------------
def test_fit_prompt_keeps_the_end_and_leaves_room_for_the_answer() -> None:
    prompt = list(range(10))
    assert fit_prompt(prompt, 4, 14) == (prompt, False)
    assert fit_prompt(prompt, 4, 12) == ([2, 3, 4, 5, 6, 7, 8, 9], True)
    assert fit_prompt(prompt, 4, None) == (prompt, False)
    with pytest.raises(InputError, match="max_new_tokens 12 leaves no room"):
        fit_prompt(prompt, 12, 12)


def test_fit_scored_cuts_only_the_context() -> None:
    context, continuation = list(range(10)), [10, 11, 12]
    assert fit_scored(context, continuation, 13) == (context, False)
    assert fit_scored(context, continuation, 8) == ([5, 6, 7, 8, 9], True)
    with pytest.raises(InputError, match="continuation of 3 tokens does not fit"):
        fit_scored(context, continuation, 3)


def test_limits_come_from_the_config_and_sane_tokenizer_lengths() -> None:
    class Config:
        max_position_embeddings = 4096

    class Tokenizer:
        model_max_length = 512

    class NoLimit:
        model_max_length = int(1e30)  # transformers' "none given"

    assert causal_lm_limit(Config(), Tokenizer()) == 4096  # the config wins for a causal LM
    assert causal_lm_limit(object(), Tokenizer()) == 512
    assert causal_lm_limit(object(), NoLimit()) is None
    assert classifier_limit(Config(), Tokenizer()) == 512  # the smaller for an encoder
    assert classifier_limit(Config(), NoLimit()) == 4096


def test_the_flag_is_stored_only_when_true_and_old_results_read_as_not_truncated() -> None:
    assert result_to_json(GenerateResult("a")) == {
        "text": "a",
        "n_prompt_tokens": 0,
        "n_generated_tokens": 0,
        "finish_reason": "stop",
    }
    cut = RewardResult(0.5, truncated=True)
    assert result_from_json(result_to_json(cut)) == cut
    assert result_from_json({"text": "stored before the flag"}).truncated is False


# -- hf: generation and scoring -------------------------------------------------------------
def test_hf_generation_keeps_the_end_of_an_over_long_prompt_and_marks_it(
    short_model: Path,
) -> None:
    backend = load_backend(parse_model_spec(f"hf:{short_model}"))
    assert isinstance(backend, HFBackend) and backend.context_limit == LIMIT
    sampling = SamplingParams(max_new_tokens=8)
    (long,) = backend.complete([CompleteRequest(LONG_TEXT, sampling)])
    assert long.truncated and long.n_prompt_tokens == LIMIT - 8
    # What the model read is the prompt's last tokens: the same answer as from those directly.
    tail = backend.encode(LONG_TEXT, templated=False)[-(LIMIT - 8) :]
    (direct,) = backend.generate_token_ids([tail], sampling)
    assert direct.text == long.text
    (short,) = backend.complete([CompleteRequest("the cat", sampling)])
    assert not short.truncated
    with pytest.raises(InputError, match=f"leaves no room for a prompt in the model's {LIMIT}"):
        backend.complete([CompleteRequest("the cat", SamplingParams(max_new_tokens=LIMIT))])


def test_hf_scoring_left_truncates_the_context_as_lm_eval_does(short_model: Path) -> None:
    backend = load_backend(parse_model_spec(f"hf:{short_model}"))
    assert isinstance(backend, HFBackend)
    request = ScoreRequest(continuation=" good", context=LONG_TEXT)
    long, short = backend.score([request, ScoreRequest(continuation=" good", context="the")])
    assert long.truncated and not short.truncated
    context, continuation = backend.encode_pair(request)
    # lm-eval keeps the last max_length + 1 tokens of context + continuation.
    kept = context[-(LIMIT + 1 - len(continuation)) :]
    (expected,) = backend.score_pairs([(kept, continuation)])
    assert long.logprob == pytest.approx(expected.logprob, abs=1e-5)


# -- counted per task, warned by run and show, kept by the cache ------------------------------
def test_run_counts_truncated_prompts_warns_and_show_and_the_cache_keep_it(
    short_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_models import build_tiny_reward_model

    judge = build_tiny_reward_model(tmp_path / "rm")  # a 512-token judge: only prompts are cut
    store = tmp_path / "runs.sqlite"
    args = tiny_args(short_model, store, "--limit", "2", "--judge", f"rm:{judge}")
    args += ["--task-arg", "mt_bench.max_new_tokens=40"]  # 24 tokens of room for the prompt
    first = run_json(capsys, *args)
    assert first["tasks"]["mt_bench"]["counts"][TRUNCATED_COUNT] == 2
    (warning,) = [w for w in first["warnings"] if "context" in w]
    assert warning.startswith("mt_bench: 2 of 2 samples had an input longer than the model's")
    shown = run_json(capsys, "show", first["run_id"], "--store", str(store))
    assert shown["tasks"]["mt_bench"]["counts"][TRUNCATED_COUNT] == 2
    assert warning in shown["warnings"]
    again = run_json(capsys, *args)  # every answer from the store: the flag came back with it
    assert again["calls_made"] == {"model": 0, "judge": 0}
    assert again["tasks"]["mt_bench"]["counts"][TRUNCATED_COUNT] == 2
    code, _, err = run_cli(capsys, *args)  # the table run also says so, on stderr
    assert code == 0 and "2 of 2 samples had an input longer" in err


def test_liconbench_prompts_longer_than_the_context_are_counted(
    short_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = task_run_args(
        short_model, tmp_path / "runs.sqlite", "liconbench", "--limit", "2",
        dataset="synthetic", rounds=1, max_new_tokens=8,
    )  # fmt: skip
    result = run_json(capsys, *args)
    entry = result["tasks"]["liconbench"]
    assert entry["counts"][TRUNCATED_COUNT] == 2
    assert 0.0 <= entry["metrics"]["round_1"] <= 1.0
    assert any(w.startswith("liconbench: 2 of 2 samples") for w in result["warnings"])


# -- reward models and classifiers ------------------------------------------------------------
def test_reward_model_judge_marks_over_long_dialogues_and_the_run_counts_them(
    tiny_model_dir: Path,
    short_reward_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = load_backend(parse_model_spec(f"rm:{short_reward_model}"))
    assert isinstance(backend, RewardModelBackend)
    long, short = backend.reward(
        [
            RewardRequest((Message("user", LONG_TEXT), Message("assistant", "good"))),
            RewardRequest((Message("user", "the cat"), Message("assistant", "runs"))),
        ]
    )
    assert long.truncated and not short.truncated
    store = tmp_path / "runs.sqlite"
    args = tiny_args(tiny_model_dir, store, "--limit", "2", "--judge", f"rm:{short_reward_model}")
    result = run_json(capsys, *args)
    assert result["tasks"]["mt_bench"]["counts"][TRUNCATED_COUNT] == 2
    with sqlite3.connect(store) as db:
        verdicts = [json.loads(v) for (v,) in db.execute("SELECT verdict_json FROM verdicts")]
    assert verdicts and any(v.get("truncated") for v in verdicts)


def test_classifier_judge_reports_truncated_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_models import build_tiny_classifier

    built = build_tiny_classifier(tmp_path / "clf", ("full_compliance", "full_refusal"))
    classifier = with_context(built, tmp_path / "short-clf")
    rows = write_lines(
        tmp_path / "rows.jsonl",
        [
            json.dumps({"id": "long", "prompt": "p", "completion": LONG_TEXT}),
            json.dumps({"id": "short", "prompt": "p", "completion": "the cat"}),
        ],
    )
    code, out, err = run_cli(
        capsys, "judge", "--judge", f"clf:{classifier}", "--input", str(rows), "--json"
    )
    assert code == 0, err
    lines = {row["id"]: row for row in map(json.loads, out.splitlines())}
    assert lines["long"]["truncated"] is True and "truncated" not in lines["short"]
    assert "1 of 2 rows were longer than the judge model's context" in err
