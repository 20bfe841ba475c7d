"""The `rollouts` setting (auto, hf, vllm) and the weights a vLLM sampler is sent, without vLLM.

The engine itself is tested in tests/test_vllm_rollouts.py (the vLLM venv, `make test-vllm`).
"""

from __future__ import annotations

import copy
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import run_cli, write_lines
from train_configs import train_args

from evalharness.errors import InputError
from evalharness.trainers import adapters
from evalharness.trainers.config import TrainConfig
from evalharness.trainers.models import load_model
from evalharness.trainers.rollouts import HFSampler
from evalharness.trainers.samplers import choose_rollouts, engine_dtype
from evalharness.trainers.vllm_rollouts import VLLMSampler, policy_weights

REWARD = "def length(prompt, completion, row):\n    return float(len(completion))\n"


@pytest.fixture
def grpo_files(tmp_path: Path) -> tuple[Path, Path]:
    reward = tmp_path / "length_reward.py"
    reward.write_text(REWARD)
    data = write_lines(
        tmp_path / "prompts.jsonl", [json.dumps({"prompt": f"say {w}"}) for w in ("a", "b")]
    )
    return data, reward


def grpo_command(tiny_model_dir: Path, files: tuple[Path, Path], out: Path) -> list[str]:
    data, reward = files
    return [
        *train_args("grpo", tiny_model_dir, data, out), "--reward", f"python:{reward}:length",
        "--group-size", "2", "--max-new-tokens", "3", "--batch-size", "2", "--max-steps", "1",
        "--quiet", "--json",
    ]  # fmt: skip


def test_the_setting_reads_from_yaml_and_flags_and_bad_values_name_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"method": "grpo", "model": "m", "data": "d", "out": "o"}
    assert TrainConfig.from_mapping(base, "train.yaml").rollouts == "auto"
    for value in ("hf", "vllm"):
        assert TrainConfig.from_mapping({**base, "rollouts": value}, "x").rollouts == value
    config = tmp_path / "train.yaml"
    config.write_text("method: grpo\nmodel: m\ndata: d\nout: o\nrollouts: vlm\n")
    code, _, err = run_cli(capsys, "train", "--config", str(config))
    assert code != 0
    assert f"{config}:5: field 'rollouts' must be one of auto, hf, vllm, not 'vlm'" in err
    assert len(err.strip().splitlines()) == 1


def test_named_vllm_without_vllm_is_a_one_line_error_before_anything_loads(
    tiny_model_dir: Path,
    grpo_files: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as where vllm is not installed
    out = tmp_path / "run"
    command = grpo_command(tiny_model_dir, grpo_files, out)
    code, _, err = run_cli(capsys, *command, "--rollouts", "vllm")
    assert code != 0
    assert "rollouts: vllm, but the vllm package is not installed" in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "metrics.jsonl").exists()


def test_auto_samples_with_generate_on_the_cpu(
    tiny_model_dir: Path,
    grpo_files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *grpo_command(tiny_model_dir, grpo_files, out))
    assert code == 0, err
    assert json.loads((out / "train.json").read_text())["placement"]["rollouts"] == "hf"


def test_auto_takes_vllm_only_on_a_cuda_gpu_where_it_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr("evalharness.backends.vllm.vllm_available", lambda: True)
    assert choose_rollouts("auto", cuda) == "vllm"
    assert choose_rollouts("auto", cpu) == "hf"
    assert choose_rollouts("auto", cuda, load_in_4bit=True) == "hf"
    assert choose_rollouts("hf", cuda) == "hf"
    assert choose_rollouts("vllm", cpu) == "vllm"
    with pytest.raises(InputError, match="4-bit base"):
        choose_rollouts("vllm", cuda, load_in_4bit=True)
    monkeypatch.setattr("evalharness.backends.vllm.vllm_available", lambda: False)
    assert choose_rollouts("auto", cuda) == "hf"


def test_the_engine_computes_in_the_policy_forward_dtype() -> None:
    """A float32 full fine-tune under bf16 autocast (a GPU's default) samples in bfloat16; a
    run without autocast in its weights' dtype (float32 on the CPU)."""
    assert engine_dtype("float32", "bf16") == "bfloat16"
    assert engine_dtype("float32", "fp16") == "float16"
    assert engine_dtype("float32", "no") == "float32"
    assert engine_dtype("bfloat16", "no") == "bfloat16"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pushed_weights_merge_lora_under_checkpoint_names_and_leave_the_base_exact(
    tiny_model_dir: Path, dtype: str
) -> None:
    """What the engine receives is the merged policy (peft's own merge_and_unload on a copy),
    named as the checkpoint names its weights, cast to the engine's dtype; the policy's base
    weights come back bit for bit (a plain merge/unmerge in bfloat16 would round them)."""
    plain = load_model(f"hf:{tiny_model_dir}", dtype).model
    original = {name: weight.detach().clone() for name, weight in plain.named_parameters()}
    policy = adapters.add_adapter(plain, "lora", {"r": 4, "lora_alpha": 8})
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, weight in policy.named_parameters():
            if "lora_B" in name:  # LoRA starts as a no-op; make it change the weights
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
    before = {n: w.detach().clone() for n, w in policy.named_parameters()}
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()

    pushed = dict(policy_weights(policy, torch.float16))

    # In the checkpoint's order: vLLM holds a layer's early weights until the rest arrive.
    assert list(pushed) == list(original)
    assert all(w.dtype == torch.float16 for w in pushed.values())
    changed = 0
    for name, weight in pushed.items():
        torch.testing.assert_close(weight, expected[name].to(torch.float16), rtol=0, atol=0)
        changed += not torch.equal(weight, original[name].to(torch.float16))
    assert changed >= 4  # the adapted projections really carry the adapter
    for name, weight in policy.named_parameters():
        assert torch.equal(weight, before[name]), name


def test_pushed_weights_carry_trained_token_rows_under_the_embedding_name(
    tiny_model_dir: Path,
) -> None:
    """LoRA's `trainable_token_indices` trains embedding rows in a layer of its own inside a
    wrapper of the embedding (`embed_tokens.token_adapter`); the checkpoint, and so the engine,
    names the merged weight `embed_tokens.weight`."""
    plain = load_model(f"hf:{tiny_model_dir}", "float32").model
    original = {name: weight.detach().clone() for name, weight in plain.named_parameters()}
    policy = adapters.add_adapter(plain, "lora", {"r": 4, "trainable_token_indices": [1, 2]})
    with torch.no_grad():
        for name, weight in policy.named_parameters():
            if "trainable_tokens_delta" in name:
                weight.add_(1.0)
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()

    pushed = dict(policy_weights(policy, torch.float32))

    assert list(pushed) == list(original)
    for name, weight in pushed.items():
        assert torch.equal(weight, expected[name]), name
    assert not torch.equal(
        pushed["model.embed_tokens.weight"], original["model.embed_tokens.weight"]
    )


def test_hf_sampler_draws_from_the_whole_softmax(tiny_model_dir: Path) -> None:
    """The policy-gradient losses assume samples from the policy itself: `generate` would keep
    only its 50 likeliest tokens (transformers' default top-k). At a high temperature the tiny
    model's next token is near uniform over its 400, so 400 draws see far more than 50."""
    loaded = load_model(f"hf:{tiny_model_dir}", "float32")
    sampler = HFSampler(loaded.model, loaded.tokenizer, temperature=50.0, max_new_tokens=1)
    prompt = loaded.tokenizer("hello")["input_ids"]
    first_tokens = {row[0] for row in sampler.sample(prompt, 400, seed=0)}
    assert len(first_tokens) > 100


def test_vllm_samples_of_different_prompts_never_share_a_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """vLLM draws a call's i-th sample from `seed + i`, and the run seeds a step's per-prompt
    calls with consecutive numbers: passed through, prompt k's second sample and prompt k+1's
    first would draw the same random numbers. What the sampler asks the engine (stubbed: no
    vLLM here) must keep every sample of a step on a seed of its own, reproducibly."""
    requested: list[Any] = []

    class Engine:
        def generate(self, prompts: list[Any], params: Any, use_tqdm: bool) -> list[Any]:
            requested.append(params)
            outputs = [types.SimpleNamespace(token_ids=[5]) for _ in range(params.n)]
            return [types.SimpleNamespace(outputs=outputs)]

    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **options: types.SimpleNamespace(**options)  # type: ignore[attr-defined]
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    sampler = object.__new__(VLLMSampler)
    sampler.llm, sampler.temperature, sampler.max_new_tokens = Engine(), 1.0, 4
    sampler.stop_ids, sampler.eos, sampler.pad = [0], 0, 0
    group, first = 4, 7 * 1_000_003 + 3 * 1000  # a step's seeds (OnlineRun.sample_seed)
    for offset in range(16):
        assert sampler.sample([1, 2], group, first + offset) == [[5]] * group
    children = [params.seed + i for params in requested for i in range(group)]
    assert len(set(children)) == len(children)
    assert all(0 <= seed < 2**63 - group for seed in children)  # vLLM keeps an int64
    sampler.sample([1, 2], group, first)
    assert requested[-1].seed == requested[0].seed  # the same call seed, the same samples
