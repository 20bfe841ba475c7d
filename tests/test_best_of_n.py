"""Best-of-N decoding (`bon:N:SCORER:MODEL`): selection, reproducibility, identity, a full run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cli_helpers import run_json, tiny_run_args
from tiny_models import build_tiny_chat_model, build_tiny_reward_model

from evalharness.backends import load_backend
from evalharness.backends.best_of_n import (
    DEFAULT_TEMPERATURE,
    BestOfNBackend,
    best_index,
    rating_fields,
)
from evalharness.backends.spec import parse_model_spec, split_best_of_n
from evalharness.engine.requests import (
    GenerateRequest,
    Message,
    RewardRequest,
    SamplingParams,
    ScoreRequest,
)
from evalharness.errors import InputError

REQUESTS = [
    GenerateRequest((Message("user", "What is the capital of france?"),), SamplingParams(0.0, 10)),
    GenerateRequest(
        (
            Message("user", "Explain why the river is long."),
            Message("assistant", "Because water."),
            Message("user", "Why?"),
        ),
        SamplingParams(0.0, 10),
    ),
    GenerateRequest((Message("user", "Write a rating."),), SamplingParams(0.0, 10)),
]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


def bon(n: int, scorer: str, model: Path) -> BestOfNBackend:
    backend = load_backend(parse_model_spec(f"bon:{n}:{scorer}:hf:{model}"))
    assert isinstance(backend, BestOfNBackend)
    return backend


def candidates(model_dir: Path, requests: list[GenerateRequest], n: int) -> list[list[str]]:
    """Each request's N candidates, sampled independently by a plain `hf:` backend."""
    plain = load_backend(parse_model_spec(f"hf:{model_dir}"))
    per_seed = []
    for seed in range(n):
        sampled = [
            GenerateRequest(r.messages, replace(r.sampling, temperature=0.7, seed=seed))
            for r in requests
        ]
        per_seed.append([result.text for result in plain.generate(sampled)])
    return [[per_seed[seed][i] for seed in range(n)] for i in range(len(requests))]


def test_reward_scorer_picks_the_highest_reward(tiny_model_dir: Path, reward_dir: Path) -> None:
    n = 4
    chosen = bon(n, f"rm:{reward_dir}", tiny_model_dir).generate(REQUESTS)
    pools = candidates(tiny_model_dir, REQUESTS, n)
    reward_model = load_backend(parse_model_spec(f"rm:{reward_dir}"))
    for request, result, pool in zip(REQUESTS, chosen, pools, strict=True):
        assert len(set(pool)) > 1, "candidates should differ for the test to mean anything"
        rewards = [
            r.reward
            for r in reward_model.reward(
                [RewardRequest((*request.messages, Message("assistant", t))) for t in pool]
            )
        ]
        assert result.text == pool[best_index(rewards)]
        (own,) = reward_model.reward(
            [RewardRequest((*request.messages, Message("assistant", result.text)))]
        )
        assert own.reward == pytest.approx(max(rewards), abs=1e-5)


def test_one_sample_is_plain_sampling_with_seed_zero(
    tiny_model_dir: Path, reward_dir: Path
) -> None:
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    one = bon(1, f"rm:{reward_dir}", tiny_model_dir)
    greedy_requests = REQUESTS[:2]
    sampled = [
        GenerateRequest(r.messages, replace(r.sampling, temperature=DEFAULT_TEMPERATURE, seed=0))
        for r in greedy_requests
    ]
    assert one.generate(greedy_requests) == plain.generate(sampled)
    # A request that already samples keeps its own temperature.
    hot = [GenerateRequest(r.messages, replace(r.sampling, temperature=1.3)) for r in REQUESTS]
    assert one.generate(hot) == plain.generate(hot)


def test_repeated_calls_give_the_same_answers(tiny_model_dir: Path, reward_dir: Path) -> None:
    first = bon(3, f"rm:{reward_dir}", tiny_model_dir).generate(REQUESTS)
    assert bon(3, f"rm:{reward_dir}", tiny_model_dir).generate(REQUESTS) == first


def test_judge_scorer_picks_the_highest_rating(tiny_model_dir: Path) -> None:
    from evalharness.judges.factory import build_judge
    from evalharness.tasks.base import JudgeItem

    n = 3
    chosen = bon(n, "self", tiny_model_dir).generate(REQUESTS)
    judge = build_judge(f"hf:{tiny_model_dir}")
    for request, result, pool in zip(
        REQUESTS, chosen, candidates(tiny_model_dir, REQUESTS, n), strict=True
    ):
        ratings = []
        for text in pool:
            item = JudgeItem("rating", "mt_bench_single", rating_fields(request.messages, text))
            verdict = judge.verdict(item, judge.backend.answer(judge.requests_for(item)))
            ratings.append(verdict["rating"])
        assert result.text == pool[best_index(ratings)]


def test_rating_fields_follow_the_dialogue_shape() -> None:
    one = rating_fields((Message("user", "q"),), "a")
    assert (one["turn"], one["question_1"], one["answer_1"]) == (1, "q", "a")
    two = rating_fields(REQUESTS[1].messages, "a")
    assert (two["turn"], two["answer_1"], two["answer_2"]) == (2, "Because water.", "a")
    system = rating_fields((Message("system", "be brief"), Message("user", "q")), "a")
    assert system["question_1"] == "system: be brief\n\nuser: q"


def test_identity_names_n_scorer_and_model(
    tiny_model_dir: Path, reward_dir: Path, tmp_path: Path
) -> None:
    other_model = build_tiny_chat_model(tmp_path / "other")
    (other_model / "generation_config.json").write_text('{"repetition_penalty": 1.1}')
    hashes = {
        "base": bon(4, f"rm:{reward_dir}", tiny_model_dir).identity_hash,
        "n": bon(2, f"rm:{reward_dir}", tiny_model_dir).identity_hash,
        "judge": bon(4, "self", tiny_model_dir).identity_hash,
        "model": bon(4, f"rm:{reward_dir}", other_model).identity_hash,
    }
    assert len(set(hashes.values())) == len(hashes)
    assert bon(4, f"rm:{reward_dir}", tiny_model_dir).identity_hash == hashes["base"]
    backend = bon(4, f"rm:{reward_dir}", tiny_model_dir)
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    assert backend.identity["model"] == plain.identity
    assert backend.identity["n"] == 4
    assert backend.identity["scorer"]["backend"]["name"] == f"rm:{reward_dir}"


def test_score_requests_pass_through(tiny_model_dir: Path, reward_dir: Path) -> None:
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    request = ScoreRequest(context="the capital of", continuation=" france")
    assert bon(3, f"rm:{reward_dir}", tiny_model_dir).score([request]) == plain.score([request])


def test_spec_parsing() -> None:
    assert split_best_of_n("4:rm:/r:hf:/m") == (4, "rm:/r", "hf:/m")
    assert split_best_of_n("2:rm:org/rm@main:hf:org/model") == (2, "rm:org/rm@main", "hf:org/model")
    assert split_best_of_n("8:self:openai:gpt-4o-mini") == (8, "self", "openai:gpt-4o-mini")
    assert split_best_of_n("3:hf:/judge:smollm2") == (3, "hf:/judge", "smollm2")
    spec = parse_model_spec("bon:4:rm:/r:hf:/m", dtype="bfloat16")
    assert (spec.backend, spec.dtype) == ("bon", "bfloat16")
    for bad in ("bon:0:rm:/r:hf:/m", "bon:x:rm:/r:hf:/m", "bon:4:rm:/r", "bon:4:hf:/m"):
        with pytest.raises(InputError, match="bon:"):
            parse_model_spec(bad)
    with pytest.raises(InputError):
        parse_model_spec("bon:4:rm:/r:rm:/r2")  # a reward model cannot generate


def test_run_with_best_of_n_completes_and_caches(
    tiny_model_dir: Path, reward_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_run_args(tiny_model_dir, tmp_path / "store.sqlite", "--limit", "1")
    args[args.index("--model") + 1] = f"bon:2:rm:{reward_dir}:hf:{tiny_model_dir}"
    first = run_json(capsys, *args)
    assert first["status"] == "complete"
    assert first["model"].startswith("bon:2:")
    assert first["calls_made"]["model"] == 2  # two turns of one MT-Bench question
    again = run_json(capsys, *args)
    assert again["calls_made"] == {"model": 0, "judge": 0}
