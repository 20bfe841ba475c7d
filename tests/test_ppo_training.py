"""PPO's loop on the tiny model: a rule reward rises over training, the checkpoint evaluates.

The reward is a Python function, the number of letters in the completion: the tiny random
model's byte-level samples hold few, and tokens that are whole words hold more, so every token
of a completion moves it.
The run is seeded (sampling, mini-batch shuffles; the value head starts at zero), so its
metrics are the same on every run and the comparison of early and late steps is not left to
chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli, tiny_run_args, write_lines
from train_configs import train_args

from evalharness.trainers.ppo import completion_layout
from evalharness.trainers.rollouts import rollout_batch

REWARD = """
def letters(prompt, completion, row):
    return float(sum(c.isalpha() for c in completion))
"""

WORDS = ("cat", "dog", "sun", "sky", "tree", "river")


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    return write_lines(
        tmp_path / "prompts.jsonl", [json.dumps({"prompt": f"say {w}"}) for w in WORDS]
    )


@pytest.fixture
def reward(tmp_path: Path) -> str:
    path = tmp_path / "rule_reward.py"
    path.write_text(REWARD)
    return f"python:{path}:letters"


@pytest.mark.usefixtures("one_torch_thread")
def test_ppo_raises_a_rule_reward_and_the_checkpoint_reloads_and_evaluates(
    tiny_model_dir: Path, prompts: Path, reward: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "ppo"
    steps = 10
    code, stdout, err = run_cli(
        capsys, *train_args("ppo", tiny_model_dir, prompts, out), "--reward", reward,
        "--batch-size", "2", "--group-size", "8", "--max-new-tokens", "6",
        "--temperature", "0.7", "--max-steps", str(steps), "--lr", "3e-3",
        "--loss-arg", "num_mini_batches=2", "--quiet", "--json",
    )  # fmt: skip
    assert code == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # A step is a batch of rollouts (8 updates each here: 4 epochs x 2 mini-batches).
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    rewards = [m["reward/mean"] for m in metrics]
    early, late = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert late > early + 3.0, rewards
    assert metrics[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # sampled = reference
    assert metrics[-1]["objective/kl"] > 0
    assert json.loads(stdout)["final"]["reward/mean"] == rewards[-1]

    from safetensors.torch import load_file

    trained, base = (
        load_file(out / "model.safetensors"),
        load_file(tiny_model_dir / "model.safetensors"),
    )
    assert set(trained) == set(base)  # the policy alone: no value head in the checkpoint
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    code, _, err = run_cli(capsys, *tiny_run_args(out, tmp_path / "store.sqlite", "--json"))
    assert code == 0, err


def test_mini_batches_must_split_the_rollouts_evenly(
    tiny_model_dir: Path, prompts: Path, reward: str, tmp_path: Path, capsys
) -> None:
    code, _, err = run_cli(
        capsys, *train_args("ppo", tiny_model_dir, prompts, tmp_path / "o"), "--reward", reward,
        "--batch-size", "3", "--group-size", "1", "--loss-arg", "num_mini_batches=2", "--quiet",
    )  # fmt: skip
    assert code == 2
    assert "3 x 1 rollouts per step must be a positive multiple of num_mini_batches=2" in err
    assert len(err.strip().splitlines()) == 1


def test_completion_layout_starts_every_completion_at_column_zero() -> None:
    """Rows of different prompt lengths: column j holds the position that predicts completion
    token j, as TRL lays responses out, and the mask covers each completion exactly."""
    batch = rollout_batch([([5, 6, 7], [11, 12]), ([5], [21, 22, 23])], pad_token_id=0)
    positions = torch.arange(batch["input_ids"].shape[1]).expand(2, -1).float()
    laid_out, mask = completion_layout(positions, batch["labels"], width=3)
    # Row 0: tokens 11, 12 sit at 3, 4, predicted from 2, 3; row 1: 21, 22, 23 at 1, 2, 3.
    assert laid_out[0, :2].tolist() == [2.0, 3.0] and laid_out[1].tolist() == [0.0, 1.0, 2.0]
    assert mask.tolist() == [[True, True, False], [True, True, True]]
