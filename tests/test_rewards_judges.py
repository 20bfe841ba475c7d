"""Rewards from LLM judges (`judge:MODEL` ratings, `pairwise:MODEL` preferences).

`openai:` judges are the scripted judge server on 127.0.0.1 (a real HTTP endpoint, no mocked
client), whose answers are a known function of the prompt (`evalharness.testing.scripted_judge`),
so each expected reward is derived here from that rule and the shipped prompt templates. A local
`hf:` judge is the tiny model, its expected rating computed here with transformers directly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import Path

import pytest

from evalharness.errors import BackendError
from evalharness.testing.judge_server import (
    ScriptedJudgeConfig,
    create_judge_app,
    running_judge_server,
)
from evalharness.trainers.rewards import Rollout, build_rewarder

QUESTION = "Name a colour."
PROMPT = ({"role": "user", "content": QUESTION},)
OTHER = ({"role": "user", "content": "Name a fruit."},)
TEMPLATES = Path(__file__).resolve().parents[1] / "judges" / "templates"


def judge_entry(kind: str, url: str, **options: object) -> list[dict[str, object]]:
    return [{"reward": f"{kind}:openai:scripted", "base_url": url, **options}]


def scripted_rating(question: str, answer: str) -> int:
    """The scripted judge's rating: 1 + sha256(last user message) mod 10, where the user message
    is the MT-Bench single-answer template's (judges/templates/mt_bench_single.user.jinja)."""
    user = f"[Question]\n{question}\n\n[The Assistant's Answer]\n{answer}"
    return 1 + int(hashlib.sha256(user.encode()).hexdigest(), 16) % 10


def test_rating_rewards_are_the_judges_ratings_on_a_0_to_1_scale_judged_once() -> None:
    answers = ["Red.", "Blue is a colour.", "Green", "Red."]
    rollouts = [Rollout(PROMPT, a) for a in answers]
    app = create_judge_app()
    with running_judge_server(app=app) as url:
        rewarder = build_rewarder(judge_entry("judge", url))
        rewards = rewarder.rewards(rollouts)
        again = rewarder.rewards(rollouts[:2])
        requests = app.state.judge.stats()["requests"]
    expected = [(scripted_rating(QUESTION, a) - 1) / 9 for a in answers]
    assert rewards == pytest.approx(expected, abs=1e-12)
    assert len({round(r, 6) for r in rewards}) > 1  # the ratings differ, so the test can fail
    assert again == rewards[:2]
    # Three distinct (prompt, completion) pairs were sent once each; every repeat was cached.
    assert requests == 3
    assert rewarder.stats() == {"judged": 3, "cached": 3, "failures": 0}


def test_an_unparseable_rating_gets_the_documented_reward_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rollouts = [Rollout(PROMPT, "Red."), Rollout(PROMPT, "Blue.")]
    # Every attempt (the first and the two sampled retries) is a new body: all garbage.
    with running_judge_server(ScriptedJudgeConfig(garbage_rate=1.0)) as url:
        lowest = build_rewarder(judge_entry("judge", url))
        with caplog.at_level(logging.WARNING):
            assert lowest.rewards(rollouts) == [0.0, 0.0]
        # Other answers: a body the server has seen before would be answered on its 2nd arrival.
        custom = build_rewarder(judge_entry("judge", url, failure_reward=-1.0))
        assert custom.rewards([Rollout(PROMPT, "Tan."), Rollout(PROMPT, "Teal.")]) == [-1.0, -1.0]
    assert lowest.stats()["failures"] == 2 and custom.stats()["failures"] == 2
    assert "reward judge:openai:scripted: 2 of 2 verdicts did not parse after 2 retries" in (
        caplog.text
    )


def test_pairwise_preferences_judge_both_orders_and_cancel_position_bias() -> None:
    long, short, same = "Blue is a colour.", "Red.", "Tan."
    first = [Rollout(PROMPT, long), Rollout(PROMPT, short), Rollout(PROMPT, short)]
    second = [Rollout(PROMPT, short), Rollout(PROMPT, long), Rollout(PROMPT, same)]
    app = create_judge_app(ScriptedJudgeConfig(pairwise_rule="longer"))
    with running_judge_server(app=app) as url:
        rewarder = build_rewarder(judge_entry("pairwise", url))
        # The scripted judge prefers the longer answer in either position; equal lengths tie.
        assert rewarder.preferences(first, second) == [1.0, 0.0, 0.5]
        assert rewarder.preferences(second[:1], first[:1]) == [0.0]  # swapped: no new call
        # Two distinct pairs, each asked in both orders; the repeats and swaps cost nothing.
        assert app.state.judge.stats()["requests"] == 4
        assert rewarder.stats() == {"judged": 2, "cached": 2, "failures": 0}
        # Weighted, alone, it still answers with its own preferences.
        weighted = build_rewarder(judge_entry("pairwise", url, weight=3.0))
        assert weighted.preferences(first, second) == [1.0, 0.0, 0.5]
    # A judge that always answers A: both orders disagree, so every pair is a tie, not a win.
    with running_judge_server(ScriptedJudgeConfig(pairwise_rule="first")) as url:
        biased = build_rewarder(judge_entry("pairwise", url))
        assert biased.preferences(first, second) == [0.5, 0.5, 0.5]


def test_pairwise_rewards_are_win_rates_within_each_prompts_group() -> None:
    # Lengths decide (longer wins, equal ties): per group, a round robin of the others.
    group_a = ["a" * 3, "b" * 9, "c" * 6, "d" * 6]
    group_b = ["x" * 2, "y" * 5]
    rollouts = [Rollout(PROMPT, t) for t in group_a] + [Rollout(OTHER, t) for t in group_b]
    rollouts.append(Rollout(({"role": "user", "content": "Alone."},), "solo"))
    with running_judge_server() as url:
        rewards = build_rewarder(judge_entry("pairwise", url)).rewards(rollouts)
    # 3 beats nobody; 9 beats all three; each 6 beats 3, ties the other 6, loses to 9.
    assert rewards == [0.0, 1.0, 1.5 / 3, 1.5 / 3, 0.0, 1.0, 0.5]


def test_an_unreachable_judge_is_one_line_naming_the_reward() -> None:
    rewarder = build_rewarder(
        judge_entry("judge", "http://127.0.0.1:9/v1", http_retries=0, timeout_s=5)
    )
    with pytest.raises(BackendError) as error:
        rewarder.rewards([Rollout(PROMPT, "Red.")])
    message = str(error.value)
    assert message.startswith("reward judge:openai:scripted: openai endpoint http://127.0.0.1:9")
    assert "unreachable" in message and "\n" not in message


def test_a_local_judge_rates_by_its_probabilities(tiny_model_dir: Path) -> None:
    """`judge:hf:DIR` (probs mode): the expected rating under the judge's renormalised
    distribution over "1]]" .. "10]]" after "Rating: [[", computed here with transformers."""
    import jinja2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    answers = ["Paris is the capital.", "the river"]
    rewarder = build_rewarder(f"judge:hf:{tiny_model_dir}")
    rewards = rewarder.rewards([Rollout(PROMPT, a) for a in answers])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES))
    fields = {"turn": 1, "question_1": QUESTION, "reference": None, "mode": "probs"}
    expected = []
    for answer in answers:
        messages = [
            {"role": role, "content": environment.get_template(f"mt_bench_single.{role}.jinja")
                .render(**fields, answer_1=answer).strip()}
            for role in ("system", "user")
        ]  # fmt: skip
        chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        context = chat + "Rating: [["
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        logprobs = []
        for rating in range(1, 11):
            ids = tokenizer(context + f"{rating}]]", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            logprobs.append(
                sum(float(logits[i - 1, ids[i]]) for i in range(len(context_ids), len(ids)))
            )
        weights = [math.exp(lp - max(logprobs)) for lp in logprobs]
        rating = sum(r * w for r, w in zip(range(1, 11), weights, strict=True)) / sum(weights)
        expected.append((rating - 1) / 9)
    assert rewards == pytest.approx(expected, abs=1e-4)
    assert rewarder.identity()["judge"]["mode"] == "probs"
    rewarder.close()


def test_judge_rewards_need_a_judge_model_and_known_options() -> None:
    from evalharness.errors import InputError

    with pytest.raises(InputError, match=re.escape("'judge:self' needs a judge model")):
        build_rewarder("judge:self")
    with pytest.raises(InputError, match="unknown key.s. labels"):
        build_rewarder([{"reward": "pairwise:openai:x", "labels": {"a": 1}}])
    with pytest.raises(InputError, match="failure_reward must be int or float"):
        build_rewarder([{"reward": "judge:openai:x", "failure_reward": "low"}])
    with pytest.raises(InputError, match=r"reward judge:rules:refusal: rules:refusal is not an"):
        build_rewarder("judge:rules:refusal")


def test_grpo_takes_a_judge_reward_and_its_options_from_the_yaml_config(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from cli_helpers import run_cli, write_lines
    from train_configs import train_args

    data = write_lines(tmp_path / "prompts.jsonl", [json.dumps({"prompt": "say cat"})])
    config = tmp_path / "train.yaml"
    app = create_judge_app()
    with running_judge_server(app=app) as url:
        config.write_text(
            "reward:\n"
            f"  - {{reward: 'pairwise:openai:scripted', base_url: '{url}', weight: 2.0}}\n"
            "  - {reward: 'regex:\\d', weight: 1.0}\n"
        )
        code, stdout, err = run_cli(
            capsys, *train_args("grpo", tiny_model_dir, data, tmp_path / "out"),
            "--config", str(config), "--group-size", "3", "--max-new-tokens", "4",
            "--batch-size", "1", "--max-steps", "1", "--quiet", "--json",
        )  # fmt: skip
        requests = app.state.judge.stats()["requests"]
    assert code == 0, err
    assert 0 < requests <= 3 * 2  # at most 3 distinct pairs in the group, two orders each
    # Win rates in a group of 3 average 0.5, so the pairwise term adds 2.0 * 0.5 to the mean,
    # and the regex term k/3 for the k samples with a digit.
    digits = (json.loads(stdout)["final"]["reward/mean"] - 1.0) * 3
    assert digits == pytest.approx(round(digits), abs=1e-6) and 0 <= round(digits) <= 3
