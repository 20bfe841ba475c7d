"""Rewards without a model: rule judges (`rules:`, `regex:`, `refusal-regex:`), the exact-answer
check (`exact[:FIELD]`), weighted sums of every kind, the checks a config's `reward` gets, and
a GRPO run whose rule reward rises over training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import run_cli, tiny_run_args, write_lines
from train_configs import train_args

from evalharness.errors import InputError
from evalharness.testing.judge_server import running_judge_server
from evalharness.trainers.config import TrainConfig
from evalharness.trainers.rewards import Rollout, build_rewarder

PROMPT = ({"role": "user", "content": "How do I bake bread?"},)


def rollouts(*completions: str, **row: object) -> list[Rollout]:
    return [Rollout(PROMPT, c, row) for c in completions]


def test_refusal_rules_reward_compliance_unless_told_otherwise() -> None:
    texts = rollouts("I'm sorry, I can't help.", "Mix flour and water.", "  As an AI, no.")
    assert build_rewarder("refusal-rules").rewards(texts) == [0.0, 1.0, 0.0]
    assert build_rewarder("rules:refusal").rewards(texts) == [0.0, 1.0, 0.0]
    # Training refusals instead: the mapping is the reward entry's `labels`.
    refuse = [{"reward": "refusal-regex:^\\s*(sorry|i'm sorry)", "labels": {"full_refusal": 1}}]
    assert build_rewarder(refuse).rewards(texts) == [1.0, 1.0, 1.0]  # compliance keeps 1.0
    refuse[0]["labels"] = {"full_refusal": 1, "full_compliance": -1}
    assert build_rewarder(refuse).rewards(texts) == [1.0, -1.0, -1.0]


def test_regex_rewards_a_match_anywhere_ignoring_case() -> None:
    rewarder = build_rewarder("regex:bake (\\d+) minutes")
    texts = rollouts("Bake 30 minutes.", "bake\n30 minutes", "Bake it for a while.")
    assert rewarder.rewards(texts) == [1.0, 0.0, 0.0]
    assert rewarder.identity()["labels"] == {"match": 1.0, "no_match": 0.0}


def test_a_rules_file_with_its_own_labels_needs_their_rewards(tmp_path: Path) -> None:
    rules = tmp_path / "tone.yaml"
    rules.write_text(
        "rules:\n"
        "  - {label: polite, patterns: ['please', 'thank']}\n"
        "  - {label: rude, patterns: ['stupid']}\n"
        "default: neutral\n"
    )
    with pytest.raises(InputError, match="no reward for label.s. polite, rude, neutral; add"):
        build_rewarder(f"rules:{rules}")
    rewarder = build_rewarder(
        [{"reward": f"rules:{rules}", "labels": {"polite": 1, "rude": -1, "neutral": 0.25}}]
    )
    texts = rollouts("Thank you!", "A stupid question, please.", "Knead it.")
    assert rewarder.rewards(texts) == [1.0, 1.0, 0.25]  # the first matching rule wins
    with pytest.raises(InputError, match=r"^reward rules:nope: rules:nope: not a built-in"):
        build_rewarder("rules:nope")


def test_exact_answers_compare_the_last_number_or_the_stripped_text() -> None:
    numbers = build_rewarder("exact")
    gsm8k = "Each loaf costs 5, so 200 loaves cost 1,000 dollars. #### 1,000"
    texts = [
        "200 * 5 = 1000",  # the last number
        "It is $1,000.",  # commas and a dollar sign
        "1000 loaves, then 999",  # the last number is not the answer
        "one thousand",  # no number at all
        "1000.0",
    ]
    assert numbers.rewards(rollouts(*texts, answer=gsm8k)) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert numbers.rewards(rollouts("-3.5 degrees", answer=-3.5)) == [1.0]
    words = rollouts("  Paris. ", "paris", "Paris,  France", "The answer is Paris", answer="Paris")
    assert numbers.rewards(words) == [1.0, 1.0, 0.0, 0.0]
    city = build_rewarder([{"reward": "exact:city", "pattern": "Answer: *(\\w+)"}])
    texts = rollouts("Thinking... Answer: Rome", "Answer:ROME", "Rome", city="rome")
    assert city.rewards(texts) == [1.0, 1.0, 0.0]
    with pytest.raises(InputError, match="reward exact:city: the prompt row has no field 'city'"):
        city.rewards(rollouts("Rome", answer="Rome"))


def test_every_kind_combines_and_the_identity_names_each_term(tmp_path: Path) -> None:
    function = tmp_path / "length.py"
    function.write_text("def reward(prompt, completion, row):\n    return len(completion)\n")
    completions = ["Sorry, no.", "Bake at 200 for 40 minutes: 40"]
    with running_judge_server() as url:
        rewarder = build_rewarder(
            [
                {"reward": "refusal-rules", "weight": 2.0},
                {"reward": "regex:minutes", "weight": 0.5},
                {"reward": "exact", "weight": 3.0},
                {"reward": f"python:{function}:reward", "weight": 0.01},
                {"reward": "pairwise:openai:scripted", "base_url": url, "weight": 1.0},
            ]
        )
        rewards = rewarder.rewards(rollouts(*completions, answer="40"))
        stats = rewarder.stats()
    # The scripted pairwise judge prefers the longer answer: win rates 0 and 1 in the group.
    expected = [2 * 0 + 0.5 * 0 + 3 * 0 + 0.01 * 10 + 0.0, 2 * 1 + 0.5 + 3 + 0.01 * 30 + 1.0]
    assert rewards == pytest.approx(expected)
    identity = rewarder.identity()["reward"]
    assert [term["weight"] for term in identity] == [2.0, 0.5, 3.0, 0.01, 1.0]
    assert identity[0]["labels"] == {"full_refusal": 0.0, "full_compliance": 1.0}
    assert identity[2]["reward"] == "exact:answer"
    assert identity[4]["judge"]["backend"]["base_url"] == url
    assert stats == {"pairwise:openai:scripted/judged": 1, "pairwise:openai:scripted/cached": 0,
                     "pairwise:openai:scripted/failures": 0}  # fmt: skip


def test_a_reward_model_identity_names_its_model(tmp_path: Path) -> None:
    from tiny_models import build_tiny_reward_model

    directory = build_tiny_reward_model(tmp_path / "rm")
    rewarder = build_rewarder(f"rm:{directory}")
    identity = rewarder.identity()
    assert identity["reward"] == f"rm:{directory}" and identity["model"]["backend"]
    rewarder.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("rmm:x", "field 'reward': unknown reward 'rmm:x': use rm:DIR"),
        ([{"reward": "exact", "labels": {}}], "entry 1 has unknown key(s) labels"),
        ([{"reward": "regex:x", "labels": {"match": "high"}}], "labels.match must be a number"),
        ([{"reward": "exact", "pattern": "("}], "entry 1: pattern '(' is not a regular expressio"),
        ("regex:a(b", "field 'reward': regex 'a(b' is not a regular expression"),
        ([{"reward": "judge:openai:x", "base_url": 3}], "entry 1: base_url must be str"),
    ],
)
def test_reward_settings_are_checked_when_the_config_is_read(value: object, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        TrainConfig.from_mapping(
            {"method": "grpo", "model": "m", "data": "d", "out": "o", "reward": value},
            "train.yaml",
        )


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_group_methods_raise_a_rule_reward_and_their_checkpoints_evaluate(
    method: str, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny model writes a digit in about a quarter of its samples at first; rewarding a
    digit (`regex:\\d`) with GRPO or RLOO makes that most of them within a dozen seeded
    steps."""
    words = ("cat", "dog", "sun", "sky", "sea", "tree", "bird", "fish")
    data = write_lines(
        tmp_path / "prompts.jsonl", [json.dumps({"prompt": f"say {w}"}) for w in words]
    )
    out = tmp_path / method
    code, _, err = run_cli(
        capsys, *train_args(method, tiny_model_dir, data, out), "--reward", "regex:\\d",
        "--group-size", "6", "--max-new-tokens", "6", "--batch-size", "2", "--max-steps", "12",
        "--lr", "1e-2", "--seed", "0", "--quiet", "--json",
    )  # fmt: skip
    assert code == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rewards = [m["reward/mean"] for m in metrics]
    early, late = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert early < 0.5 and late > early + 0.3, rewards
    evaluation = tiny_run_args(out, tmp_path / "store.sqlite", "--limit", "2", "--json")
    code, stdout, err = run_cli(capsys, *evaluation)
    assert code == 0, err
    assert json.loads(stdout)["status"] == "complete"
