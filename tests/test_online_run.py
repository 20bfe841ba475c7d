"""The shared online-run scaffolding: reward specs from a config, Python-function rewards, the
weighted sum, and that the rollouts a reward sees carry the data row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import run_cli, write_lines
from train_configs import train_args

from evalharness.errors import InputError
from evalharness.trainers.config import TrainConfig
from evalharness.trainers.rewards import Rollout, build_rewarder

# Tiny-model training: one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REWARDS = """
def letters(prompt, completion, row):
    if "answer" not in row or not prompt[-1]["content"].startswith("say"):
        raise ValueError(f"the reward saw prompt {prompt!r} and row {row!r}")
    return float(sum(c.isalpha() for c in completion))


def answer(prompt, completion, row):
    return 1.0 if row.get("answer", "") in completion else 0.0
"""


@pytest.fixture
def reward_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS)
    return path


def test_weighted_python_rewards_sum_with_their_weights(reward_file: Path) -> None:
    rollouts = [
        Rollout(({"role": "user", "content": "say q"},), "ab1", {"answer": "b"}),
        Rollout(({"role": "user", "content": "say q"},), "xyz", {"answer": "b"}),
    ]
    single = build_rewarder(f"python:{reward_file}:letters")
    assert single.rewards(rollouts) == [2.0, 3.0]
    combined = build_rewarder(
        [
            {"reward": f"python:{reward_file}:letters", "weight": 0.5},
            {"reward": f"python:{reward_file}:answer", "weight": 2.0},
        ]
    )
    assert combined.rewards(rollouts) == [0.5 * 2 + 2.0 * 1, 0.5 * 3 + 2.0 * 0]
    assert combined.preferences(rollouts[:1], rollouts[1:]) == [1.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([{"reward": "rm:x", "wieght": 1}], "'reward', entry 1 has unknown key(s) wieght"),
        ([{"weight": 1}], "'reward', entry 1 must be a mapping with a reward spec"),
        ([{"reward": "rm:x", "weight": "heavy"}], "'reward', entry 1: weight must be a number"),
        (7, "must be a reward spec"),
    ],
)
def test_bad_reward_settings_are_one_line_errors(value: object, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        TrainConfig.from_mapping(
            {"method": "grpo", "model": "m", "data": "d", "out": "o", "reward": value},
            "train.yaml",
        )


def test_unknown_reward_kind_and_missing_function_are_clear(reward_file: Path) -> None:
    with pytest.raises(InputError, match="unknown reward 'rmm:x'"):
        build_rewarder("rmm:x")
    with pytest.raises(InputError, match="has no function nope"):
        build_rewarder(f"python:{reward_file}:nope")
    # Called from Python, a setting gets the checks a config's `reward` gets.
    with pytest.raises(InputError, match="reward, entry 1 must be a mapping with a reward spec"):
        build_rewarder([{"weight": 2.0}])
    with pytest.raises(InputError, match="reward, entry 1: weight must be a number"):
        build_rewarder([{"reward": "exact", "weight": "heavy"}])


def test_grpo_trains_on_a_weighted_python_reward_from_a_yaml_config(
    tiny_model_dir: Path, reward_file: Path, tmp_path: Path, capsys
) -> None:
    data = write_lines(
        tmp_path / "prompts.jsonl",
        [json.dumps({"prompt": f"say {w}", "answer": w}) for w in ("cat", "dog", "sun", "sky")],
    )
    config = tmp_path / "train.yaml"
    config.write_text(
        "reward:\n"
        f"  - {{reward: 'python:{reward_file}:letters', weight: 0.1}}\n"
        f"  - {{reward: 'python:{reward_file}:answer', weight: 1.0}}\n"
    )
    out = tmp_path / "grpo"
    code, stdout, err = run_cli(
        capsys, *train_args("grpo", tiny_model_dir, data, out), "--config", str(config),
        "--group-size", "2", "--max-new-tokens", "4", "--batch-size", "2", "--max-steps", "2",
        "--quiet", "--json",
    )  # fmt: skip
    assert code == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["reward/mean"] >= 0 for m in metrics)
    assert json.loads(stdout)["final"]["reward/mean"] == metrics[-1]["reward/mean"]
    recorded = json.loads((out / "train.json").read_text())["reward"]["reward"]
    assert [(term["reward"], term["weight"]) for term in recorded] == [
        (f"python:{reward_file}:letters", 0.1),
        (f"python:{reward_file}:answer", 1.0),
    ]


def test_an_explicit_reference_is_the_reference_with_an_adapter_too(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`reference: DIR` with LoRA scores against DIR, as the offline methods do, not against the
    base with the adapter disabled (which is only the default)."""
    import torch
    from train_configs import train_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalharness.trainers import losses
    from evalharness.trainers.config import LoraSettings
    from evalharness.trainers.models import PolicyScorer
    from evalharness.trainers.online_run import start_online_run
    from evalharness.trainers.rollouts import rollout_batch

    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        other.lm_head.weight.mul_(3.0)  # tied to the embeddings: a different model throughout
    other.save_pretrained(tmp_path / "reference")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "reference")
    data = write_lines(tmp_path / "prompts.jsonl", [json.dumps({"prompt": "say cat"})])
    config = train_config(
        "grpo", tiny_model_dir, data, tmp_path / "out", reward="regex:x",
        lora=LoraSettings(rank=4, alpha=8), reference=f"hf:{tmp_path / 'reference'}",
    )  # fmt: skip
    method = losses.method("grpo")
    run = start_online_run(config, method, {}, progress=False, needs_reference=True)
    batch = rollout_batch([(run.prompts[0].ids, [5, 6, 7])], run.tokenizer.pad_token_id)
    reference = run.reference_token_logps(batch)
    arguments = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        expected = PolicyScorer(other)(*arguments)[0]
        base = run.scorer(*arguments)[0]  # the LoRA starts as a no-op: the base's log-probs
    assert not torch.allclose(expected, base)  # the two candidates differ, so this can fail
    torch.testing.assert_close(reference, expected)


def test_a_reward_that_cannot_be_built_stops_the_run_before_the_model_loads(
    reward_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_lines(tmp_path / "prompts.jsonl", [json.dumps({"prompt": "say cat"})])
    # The model does not exist either: the reward's error must be the one reported.
    code, _, err = run_cli(
        capsys, *train_args("grpo", tmp_path / "no-model", data, tmp_path / "out"),
        "--reward", f"python:{reward_file}:nope", "--quiet",
    )  # fmt: skip
    assert code == 2
    assert "has no function nope" in err and "no-model" not in err
