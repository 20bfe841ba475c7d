"""Online DPO, XPO and Nash-MD end to end on the tiny model with a rule reward.

Each method trains (seeded, so the numbers are the same on every run) on a toy prompt set with
a Python reward that counts letters in the completion; the tiny random model mostly emits byte
tokens, so the count has room to grow. The mean reward of the policy's samples over the last
quarter of the steps must beat the first quarter's, and the checkpoint must reload and run an
evaluation. The mixture policy's logits processor is checked against a step-by-step greedy
decode of the mixture computed from both models' full forward passes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import run_cli, tiny_run_args, write_lines
from tiny_models import phrase
from train_configs import train_config

from evalharness.engine.training import ONLINE_LOOPS, run_training
from evalharness.trainers import losses
from evalharness.trainers.online_pairs_loop import MixtureLogits, answers_pairs, verdicts
from evalharness.trainers.rewards import Rewarder, Rollout
from evalharness.trainers.rewards.combined import WeightedRewarder

REWARDS = """
def letters(prompt, completion, row):
    return float(sum(c.isalpha() for c in completion))
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def toy_prompts(tmp_path: Path) -> tuple[Path, str]:
    rng = random.Random(0)
    data = write_lines(
        tmp_path / "prompts.jsonl", [json.dumps({"prompt": phrase(rng)}) for _ in range(16)]
    )
    reward_file = tmp_path / "rule_rewards.py"
    reward_file.write_text(REWARDS)
    return data, f"python:{reward_file}:letters"


#: Per method: learning rate, completion length, sampling temperature and steps that show the
#: rise in under a minute (sampling is from the full distribution, as TRL's: no top-k).
SETTINGS: dict[str, dict[str, Any]] = {
    "online_dpo": {"learning_rate": 1e-2, "max_new_tokens": 6, "temperature": 0.7, "max_steps": 12},
    "xpo": {"learning_rate": 1e-2, "max_new_tokens": 6, "temperature": 1.0, "max_steps": 16},
    "nash_md": {"learning_rate": 1e-2, "max_new_tokens": 4, "temperature": 0.7, "max_steps": 20},
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_each_method_raises_the_rule_reward_and_its_checkpoint_evaluates(
    name: str,
    tiny_model_dir: Path,
    toy_prompts: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, reward = toy_prompts
    out = tmp_path / name
    config = train_config(
        name, tiny_model_dir, data, out, reward=reward, batch_size=8, seed=0, **SETTINGS[name]
    )
    summary = run_training(losses.method(name), config, progress=False)
    assert summary.steps == SETTINGS[name]["max_steps"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rewards = [m["reward/mean"] for m in metrics]
    quarter = len(rewards) // 4
    early, late = sum(rewards[:quarter]) / quarter, sum(rewards[-quarter:]) / quarter
    assert late > 1.2 * early, rewards
    if name != "online_dpo":  # the opponent: the reference's or the mixture's sample
        assert all("reward/opponent" in m for m in metrics)
    assert all(0.0 <= m["preference/first"] <= 1.0 for m in metrics)
    train_json = json.loads((out / "train.json").read_text())
    assert train_json["method"] == name
    code, _, err = run_cli(capsys, *tiny_run_args(out, tmp_path / "store.sqlite", "--json"))
    assert code == 0, err


def test_the_methods_are_online_with_their_loop() -> None:
    from evalharness.engine.training import method_rows

    rows = {row["name"]: row for row in method_rows()}
    for name in SETTINGS:
        assert ONLINE_LOOPS[name] == "online_pairs_loop:train_online_pairs"
        assert rows[name]["kind"] == "online"


def _perturbed_copy(model: Any, seed: int) -> Any:
    """A second model of the same shape with other weights: a stand-in reference."""
    import copy

    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return other


@pytest.mark.parametrize("coef", [0.0, 0.5, 1.0])
def test_mixture_processor_decodes_the_geometric_mixture(tiny_model_dir: Path, coef: float):
    """Greedy generation through `MixtureLogits` picks, at every step, the argmax of
    c·ref_logits + (1 − c)·policy_logits from full forward passes of both models."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    reference = _perturbed_copy(policy, seed=7).eval()
    prompt = torch.tensor([tokenizer("the capital city of france")["input_ids"]])

    def reference_logits(input_ids: torch.Tensor) -> torch.Tensor:
        return reference(input_ids=input_ids).logits[:, -1]

    with torch.no_grad():
        generated = policy.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=8,
            min_new_tokens=8,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([MixtureLogits(reference_logits, coef)]),
        )[0, prompt.shape[1] :].tolist()
        expected, ids = [], prompt
        for _ in range(8):
            mixed = coef * reference(input_ids=ids).logits[0, -1]
            mixed = mixed + (1 - coef) * policy(input_ids=ids).logits[0, -1]
            if len(expected) < 8:  # min_new_tokens: EOS is not allowed before the 8th token
                mixed[tokenizer.eos_token_id] = -float("inf")
            token = int(mixed.argmax())
            expected.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert generated == expected
    if coef in (0.0, 1.0):  # the ends are the policy's and the reference's own greedy decodes
        alone = (
            (policy if coef == 0.0 else reference)
            .generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=8,
                min_new_tokens=8,
                pad_token_id=tokenizer.pad_token_id,
            )[0, prompt.shape[1] :]
            .tolist()
        )
        assert generated == alone


class _Pairwise(Rewarder):
    """A pairwise judge: verdicts only, no scalar rewards."""

    def preferences(self, first, second):  # type: ignore[no-untyped-def]
        return [1.0, 0.0, 0.5]


class _Scalar(Rewarder):
    def rewards(self, rollouts):  # type: ignore[no-untyped-def]
        return [float(len(r.completion)) for r in rollouts]


def test_verdicts_from_rewards_follow_trl_and_a_pairwise_judge_is_asked_directly() -> None:
    rollout = lambda text: Rollout(({"role": "user", "content": "q"},), text)  # noqa: E731
    first = [rollout("aaaa"), rollout("a"), rollout("aa")]
    second = [rollout("aa"), rollout("aaa"), rollout("aa")]
    eos = torch.tensor([True, False, True]), torch.tensor([True, True, False])
    got, raw = verdicts(_Scalar(), first, second, *eos, penalty=1.0)
    # TRL: rewards less the penalty where there is no EOS, then sigmoid(r_1 - r_2).
    differences = [4.0 - 2.0, (1.0 - 1.0) - 3.0, 2.0 - (2.0 - 1.0)]
    expected = torch.sigmoid(torch.tensor(differences, dtype=torch.float64))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert raw.tolist() == [[4.0, 1.0, 2.0], [2.0, 3.0, 2.0]]
    got, raw = verdicts(_Pairwise(), first, second, *eos, penalty=None)
    assert raw is None and got.tolist() == [1.0, 0.0, 0.5]
    # A weighted sum asks its one pairwise term; a sum of several compares summed rewards.
    alone = WeightedRewarder([(_Pairwise(), 2.0)])
    mixed = WeightedRewarder([(_Scalar(), 1.0), (_Scalar(), 0.5)])
    assert answers_pairs(alone) and not answers_pairs(mixed) and not answers_pairs(_Scalar())
    assert verdicts(alone, first, second, *eos, penalty=None)[0].tolist() == [1.0, 0.0, 0.5]
    got, raw = verdicts(mixed, first, second, *eos, penalty=None)
    assert raw.tolist() == [[6.0, 1.5, 3.0], [3.0, 4.5, 3.0]] and got[2] == 0.5


@pytest.mark.parametrize("name", ["xpo", "nash_md"])
def test_under_lora_the_opponent_comes_from_the_base_with_adapters_off(
    name: str, tiny_model_dir: Path, toy_prompts: tuple[Path, str], tmp_path: Path
) -> None:
    """With adapters the reference is the base itself: before the first step the policy
    equals it (LoRA starts at zero), so the first step's KL estimate is exactly 0."""
    from evalharness.trainers.config import LoraSettings

    data, reward = toy_prompts
    out = tmp_path / name
    config = train_config(
        name, tiny_model_dir, data, out, reward=reward, batch_size=2, max_steps=2,
        max_new_tokens=3, learning_rate=1e-2, lora=LoraSettings(rank=4, alpha=8),
    )  # fmt: skip
    summary = run_training(losses.method(name), config, progress=False)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary.steps == 2 and metrics[0]["kl"] == 0.0 and metrics[1]["kl"] != 0.0
    assert (out / "adapter" / "adapter_config.json").exists()


@pytest.mark.parametrize(
    ("method", "argument", "message"),
    [
        ("xpo", "loss_type=hinge", "loss_type=hinge: online_dpo and xpo take sigmoid or ipo"),
        ("nash_md", "mixture_coef=2", "mixture_coef=2.0 must lie in [0, 1]"),
    ],
)
def test_bad_options_are_one_line_errors_before_training(
    method: str,
    argument: str,
    message: str,
    tiny_model_dir: Path,
    toy_prompts: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from train_configs import train_args

    data, reward = toy_prompts
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, *train_args(method, tiny_model_dir, data, out), "--reward", reward,
        "--loss-arg", argument, "--quiet",
    )  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "metrics.jsonl").exists()


def test_under_lora_the_reference_and_mixture_samples_come_from_the_base(
    tiny_model_dir: Path,
) -> None:
    """With adapters on a trained LoRA (weights away from zero), XPO's opponent is the base's
    own sample and Nash-MD's mixture at c = 1 samples the base, c = 0 the adapted policy:
    each equals a plain seeded sample of that model (`HFSampler`), and base and policy differ."""
    import copy
    from contextlib import nullcontext
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalharness.trainers.online_pairs_loop import mixture_sample, reference_sample
    from evalharness.trainers.rollouts import HFSampler, Prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    policy = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator))
    policy.eval()
    settings = {"temperature": 1.0, "max_new_tokens": 6}
    run = SimpleNamespace(
        reference=None,
        model=policy,
        device=torch.device("cpu"),
        accelerator=SimpleNamespace(autocast=nullcontext),
        config=SimpleNamespace(**settings),
        tokenizer=tokenizer,
    )
    prompt = Prompt(({"role": "user", "content": "q"},), tokenizer("the capital city")["input_ids"])
    differ = False
    for seed in range(4):
        (from_base,) = HFSampler(base, tokenizer, **settings).sample(prompt.ids, 1, seed)
        (from_policy,) = HFSampler(policy, tokenizer, **settings).sample(prompt.ids, 1, seed)
        assert reference_sample(run, prompt, seed) == from_base
        assert mixture_sample(run, prompt, seed, 1.0) == from_base
        assert mixture_sample(run, prompt, seed, 0.0) == from_policy
        differ = differ or from_base != from_policy
    assert differ
