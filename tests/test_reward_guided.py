"""Reward-guided decoding (`args:` ARGS, `deal:` DeAL): the choices each search makes, checked
against the model's and the reward model's own numbers, their identities, and full runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_json, tiny_run_args
from tiny_models import build_tiny_reward_model

from evalharness.backends import load_backend
from evalharness.backends.args_decoding import ArgsBackend
from evalharness.backends.deal import DealBackend
from evalharness.backends.spec import parse_model_spec, split_reward_guided
from evalharness.engine.requests import (
    GenerateRequest,
    Message,
    RewardRequest,
    SamplingParams,
    ScoreRequest,
)
from evalharness.errors import InputError

REQUESTS = [
    GenerateRequest((Message("user", "What is the capital of france?"),), SamplingParams(0.0, 6)),
    GenerateRequest(
        (
            Message("user", "Explain why the river is long."),
            Message("assistant", "Because water."),
            Message("user", "Why?"),
        ),
        SamplingParams(0.0, 6),
    ),
]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


def wrapper(method: str, options: str, reward: Path, model: Path) -> Any:
    prefix = f"{method}:{options}:" if options else f"{method}:"
    return load_backend(parse_model_spec(f"{prefix}rm:{reward}:hf:{model}"))


def first_step(model_dir: Path, messages: tuple[Message, ...], k: int) -> tuple[list, list]:
    """The model's k most likely first tokens and their raw logits, from transformers directly
    (chat template with a generation prompt, one unpadded forward pass)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(ids).logits[0, -1].float()
    top = logits.topk(k)
    return top.indices.tolist(), top.values.tolist()


def rewards_of(reward_dir: Path, messages: tuple[Message, ...], texts: list[str]) -> list[float]:
    reward_model = load_backend(parse_model_spec(f"rm:{reward_dir}"))
    requests = [RewardRequest((*messages, Message("assistant", t))) for t in texts]
    return [r.reward for r in reward_model.reward(requests)]


def test_args_with_zero_weight_is_greedy_decoding(tiny_model_dir: Path, reward_dir: Path) -> None:
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    args = wrapper("args", "k=5,w=0", reward_dir, tiny_model_dir)
    assert args.generate(REQUESTS) == plain.generate(REQUESTS)


def test_args_follows_the_reward_when_its_weight_is_large(
    tiny_model_dir: Path, reward_dir: Path
) -> None:
    k = 8
    messages = REQUESTS[0].messages
    tokens, logits = first_step(tiny_model_dir, messages, k)
    tokenizer = load_backend(parse_model_spec(f"hf:{tiny_model_dir}")).tokenizer
    texts = [tokenizer.decode([t], skip_special_tokens=True) for t in tokens]
    rewards = rewards_of(reward_dir, messages, texts)
    greedy = tokens[0]
    best = max(range(k), key=rewards.__getitem__)
    preferred = tokens[best]
    assert preferred != greedy, "the reward must prefer another token for the test to mean much"

    def args_choice(weight: float) -> int:
        """ARGS's own selection, transcribed from deeplearning-wisc/args `argsearch.py`
        (`generate_step`, method "greedy"): `new_scores = rewards * weight +
        prescreen_logits`, then the top one. Raw logits there, log-probabilities here: they
        differ by one constant per step, so the choice is the same."""
        return tokens[max(range(k), key=lambda i: rewards[i] * weight + logits[i])]

    # Just below and just above the weight where the reward overtakes the model's preference.
    crossover = (logits[0] - logits[best]) / (rewards[best] - rewards[0])
    assert args_choice(0.9 * crossover) == greedy and args_choice(1.1 * crossover) != greedy
    for weight, expected in (
        (1000.0, preferred),
        (0.0, greedy),
        (0.9 * crossover, args_choice(0.9 * crossover)),
        (1.1 * crossover, args_choice(1.1 * crossover)),
    ):
        backend = wrapper("args", f"k={k},w={weight},max_tokens=1", reward_dir, tiny_model_dir)
        assert isinstance(backend, ArgsBackend)
        prompt, _ = backend.prompt_ids(REQUESTS[0])
        assert backend.search(REQUESTS[0], prompt).tokens == [expected], weight


def test_args_sampling_is_seeded(tiny_model_dir: Path, reward_dir: Path) -> None:
    backend = wrapper("args", "k=4,w=2,max_tokens=3", reward_dir, tiny_model_dir)
    hot = [GenerateRequest(r.messages, SamplingParams(1.0, 8, seed=3)) for r in REQUESTS]
    assert backend.generate(hot) == backend.generate(hot)


def test_deal_with_one_candidate_and_one_beam_is_greedy_decoding(
    tiny_model_dir: Path, reward_dir: Path
) -> None:
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    deal = wrapper("deal", "k=1,beam=1,lookahead=3", reward_dir, tiny_model_dir)
    assert deal.generate(REQUESTS) == plain.generate(REQUESTS)


def test_deal_returns_the_highest_reward_answer_it_explored(
    tiny_model_dir: Path, reward_dir: Path
) -> None:
    deal = wrapper("deal", "k=3,beam=2,lookahead=2,max_tokens=4", reward_dir, tiny_model_dir)
    assert isinstance(deal, DealBackend)
    results = deal.generate(REQUESTS)
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    for request, result, explored in zip(REQUESTS, results, deal.explored, strict=True):
        texts = [plain.tokenizer.decode(c.tokens, skip_special_tokens=True) for c in explored]
        assert len(set(texts)) > 2, "the search should have finished several answers"
        # Scored again, independently, by the reward model itself.
        rewards = rewards_of(reward_dir, request.messages, texts)
        (own,) = rewards_of(reward_dir, request.messages, [result.text])
        assert own == pytest.approx(max(rewards), abs=1e-5)
        assert result.text == texts[max(range(len(texts)), key=rewards.__getitem__)].strip()
        # Every finished answer stays within the token budget.
        assert all(len(c.tokens) <= 4 for c in explored)


def test_identities_differ_by_options_reward_and_method(
    tiny_model_dir: Path, reward_dir: Path, tmp_path: Path
) -> None:
    # Another reward model: a copy with another label (rebuilding one trains a tokenizer).
    other_reward = Path(shutil.copytree(reward_dir, tmp_path / "rm2"))
    (other_reward / "config.json").write_text(
        (other_reward / "config.json").read_text().replace('"reward"', '"helpfulness"')
    )
    hashes = {
        "args": wrapper("args", "", reward_dir, tiny_model_dir).identity_hash,
        "args k": wrapper("args", "k=3", reward_dir, tiny_model_dir).identity_hash,
        "args w": wrapper("args", "w=2.5", reward_dir, tiny_model_dir).identity_hash,
        "args max": wrapper("args", "max_tokens=16", reward_dir, tiny_model_dir).identity_hash,
        "args reward": wrapper("args", "", other_reward, tiny_model_dir).identity_hash,
        "deal": wrapper("deal", "", reward_dir, tiny_model_dir).identity_hash,
        "deal beam": wrapper("deal", "beam=3", reward_dir, tiny_model_dir).identity_hash,
        "deal lookahead": wrapper("deal", "lookahead=0", reward_dir, tiny_model_dir).identity_hash,
        "plain": load_backend(parse_model_spec(f"hf:{tiny_model_dir}")).identity_hash,
    }
    assert len(set(hashes.values())) == len(hashes)
    # The defaults spelled out are the same decoding: the same cache entries.
    spelled = wrapper("args", "w=1.0,k=10", reward_dir, tiny_model_dir)
    assert spelled.identity_hash == hashes["args"]
    assert wrapper("deal", "k=4,beam=2", reward_dir, tiny_model_dir).identity_hash == hashes["deal"]
    backend = wrapper("args", "k=3", reward_dir, tiny_model_dir)
    assert backend.identity["options"] == {"k": 3, "max_tokens": None, "w": 1.0}
    assert (
        backend.identity["model"] == load_backend(parse_model_spec(f"hf:{tiny_model_dir}")).identity
    )


def test_score_requests_pass_through(tiny_model_dir: Path, reward_dir: Path) -> None:
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    request = ScoreRequest(context="the capital of", continuation=" france")
    for method in ("args", "deal"):
        assert wrapper(method, "", reward_dir, tiny_model_dir).score([request]) == plain.score(
            [request]
        )


def test_spec_parsing() -> None:
    assert split_reward_guided("args", "rm:/r:hf:/m") == ({}, "rm:/r", "hf:/m")
    assert split_reward_guided("args", "k=3,w=-0.5:rm:org/rm@v1:hf:org/m") == (
        {"k": 3, "w": -0.5},
        "rm:org/rm@v1",
        "hf:org/m",
    )
    assert split_reward_guided("deal", "beam=4,lookahead=0:rm:/r:smollm2") == (
        {"beam": 4, "lookahead": 0},
        "rm:/r",
        "smollm2",
    )
    for bad, match in (
        ("args:k=0:rm:/r:hf:/m", "k must be at least 1"),
        ("args:k=two:rm:/r:hf:/m", "k='two' must be a whole number"),
        ("args:w=nan:rm:/r:hf:/m", "w='nan' must be a finite number"),
        ("args:w=-inf:rm:/r:hf:/m", "w='-inf' must be a finite number"),
        ("args:beam=2:rm:/r:hf:/m", "not one of k=..., w=..., max_tokens=..."),
        ("deal:w=1:rm:/r:hf:/m", "not one of k=..., beam=..."),
        ("args:rm:/r:openai:gpt-4o", "hf: or builtin"),
        ("deal:hf:/m", "rm:REWARD_MODEL"),
        ("args:rm:/r:vllm:/m", "hf: or builtin"),
    ):
        with pytest.raises(InputError, match=match):
            parse_model_spec(bad)


def test_runs_evaluate_the_wrappers_like_any_model(
    tiny_model_dir: Path, reward_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import evalharness

    store = tmp_path / "store.sqlite"
    # The reward model judges: the default self-judge would score MT-Bench's long rating
    # prompt through the wrapped model (a pass-through `test_score_requests_pass_through`
    # checks), several times the cost of the searches under test.
    judge = f"rm:{reward_dir}"
    args = tiny_run_args(tiny_model_dir, store, "--limit", "1", "--judge", judge, max_new_tokens=2)
    args[args.index("--model") + 1] = f"args:k=3:rm:{reward_dir}:hf:{tiny_model_dir}"
    first = run_json(capsys, *args)
    assert first["status"] == "complete"
    assert first["calls_made"]["model"] == 2  # two turns of one MT-Bench question
    assert run_json(capsys, *args)["calls_made"] == {"model": 0, "judge": 0}
    # Other options: a run of their own, not the cached answers.
    args[args.index("--model") + 1] = f"args:k=3,w=5:rm:{reward_dir}:hf:{tiny_model_dir}"
    assert run_json(capsys, *args)["calls_made"]["model"] == 2

    options = {"mt_bench": {"data": "builtin", "max_new_tokens": "2"}}
    spec = f"deal:k=2,beam=2,lookahead=1:rm:{reward_dir}:hf:{tiny_model_dir}"
    kwargs = {"limit": 1, "store": store, "task_options": options, "judge": judge}
    results = evalharness.evaluate(spec, "mt_bench", **kwargs)
    assert results.status == "complete"
    again = evalharness.evaluate(spec, "mt_bench", **kwargs)
    assert again.run_id == results.run_id
    assert again.raw["calls_made"] == {"model": 0, "judge": 0}
