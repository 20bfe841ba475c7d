"""What only a CUDA machine can check (marker `gpu`; every test skips without CUDA).

`make test-gpu` runs this file on its own (`pytest -m gpu tests/test_gpu.py`): the kernel tests
in tests/test_kernels*.py set TRITON_INTERPRET=1 when imported, which would turn the compiled
kernel checked here into the interpreted one, so the kernel test skips when it finds it set.

- The compiled Triton scoring kernel against a float64 reference on the same inputs, forward
  (log-probs, entropy) and backward (hidden, weight, bias), float32 and bfloat16 inputs.
- An `hf:` model on cuda against the same model on the CPU, float32 and bfloat16: the same
  identity (the device is never part of it), per-token log-probs and scored continuations
  within a stated tolerance. The differences are what the cross-device tolerance is, so they
  are also written to the JSON file named by EVALHARNESS_GPU_RECORD (the suite's summary).
- `serve --device cuda` answers as the same model loaded on cuda in this process does.
- One DPO step trains on cuda and writes changed weights.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from cli_helpers import free_port, spawn_cli
from tiny_models import phrase

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

RECORD_ENV = "EVALHARNESS_GPU_RECORD"
TEXTS = (
    "the water is good and the river is long",
    "Rating: [[7]] because the answer is correct",
    "people look at the city and explain why",
    "What is the capital of France? paris france",
)
# Cross-device tolerance of per-token log-probs (nats) on the tiny model: float32 differs only
# by kernel rounding; in bfloat16 the logits themselves are rounded to 8 bits of mantissa (a
# step of 0.125 at |logit| = 16, and this model's logits are that large), on each device after
# a different summation order.
TOLERANCE = {"float32": {"max": 1e-3, "mean": 1e-4}, "bfloat16": {"max": 0.5, "mean": 0.1}}


def record(key: str, value: Any) -> None:
    """Add a measurement to the suite's record file (when the suite named one)."""
    target = os.environ.get(RECORD_ENV)
    if not target:
        return
    path = Path(target)
    found = json.loads(path.read_text()) if path.exists() else {}
    found[key] = value
    path.write_text(json.dumps(found, indent=2))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.double().abs().max().clamp_min(1e-12)
    return float((actual.double() - expected.double()).abs().max() / scale)


# -- the compiled kernel --------------------------------------------------------------------------
def kernel_inputs(n_rows: int = 1000, dim: int = 256, vocab: int = 32003) -> dict[str, Any]:
    """Sizes that are no multiple of any tile; logits with a trained LM's spread; padding and
    a share of greedy targets."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(n_rows, dim, generator=generator)
    weight = torch.randn(vocab, dim, generator=generator) / dim**0.5 * 3
    bias = torch.randn(vocab, generator=generator) * 0.1
    targets = torch.randint(0, vocab, (n_rows,), generator=generator)
    greedy = torch.rand(n_rows, generator=generator) < 0.3
    targets[greedy] = (hidden @ weight.T + bias).argmax(-1)[greedy]
    targets[::97] = -100
    signs = torch.randn(n_rows, generator=generator)
    return {"hidden": hidden, "weight": weight, "bias": bias, "targets": targets, "signs": signs}


def scores_and_grads(
    inputs: dict[str, Any], dtype: torch.dtype, impl: str
) -> tuple[Any, dict[str, torch.Tensor]]:
    from evalharness.kernels.dispatch import token_stats
    from evalharness.kernels.reference import token_stats_reference

    leaves = {
        name: inputs[name].to("cuda", dtype).detach().requires_grad_()
        for name in ("hidden", "weight", "bias")
    }
    targets = inputs["targets"].to("cuda")
    if impl == "reference":
        stats = token_stats_reference(
            leaves["hidden"], leaves["weight"], targets, leaves["bias"], entropy=True,
            dtype=torch.float64,
        )  # fmt: skip
    else:
        stats = token_stats(
            leaves["hidden"], leaves["weight"], targets, leaves["bias"], entropy=True, impl=impl
        )
    signs = inputs["signs"].to("cuda")
    (signs * (stats.logprobs + 0.3 * stats.entropy)).sum().backward()
    return stats, {name: leaf.grad for name, leaf in leaves.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_compiled_kernel_matches_float64_reference(dtype: torch.dtype) -> None:
    from evalharness.kernels.dispatch import triton_interpreted

    if triton_interpreted():
        pytest.skip("TRITON_INTERPRET=1 in this process: run tests/test_gpu.py on its own")
    inputs = kernel_inputs()
    stats, grads = scores_and_grads(inputs, dtype, "triton")
    # The reference sees the same dtype-rounded inputs, so what is left is the kernel's error.
    rounded = {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in inputs.items()}
    rounded["signs"] = inputs["signs"]
    exact, exact_grads = scores_and_grads(rounded, torch.float64, "reference")
    errors = {
        "logprobs_max_abs": float((stats.logprobs.double() - exact.logprobs.double()).abs().max()),
        "logprobs_rel": relative_error(stats.logprobs, exact.logprobs),
        "entropy_rel": relative_error(stats.entropy, exact.entropy),
        **{f"grad_{name}_rel": relative_error(grads[name], exact_grads[name]) for name in grads},
    }
    record(f"kernel_vs_float64_{str(dtype).removeprefix('torch.')}", errors)
    assert stats.logprobs.dtype == torch.float32 and torch.isfinite(stats.logprobs).all()
    assert torch.equal(stats.is_argmax, exact.is_argmax)
    padding = inputs["targets"].to("cuda") == -100
    assert torch.all(stats.logprobs[padding] == 0) and torch.all(grads["hidden"][padding] == 0)
    # Products of bf16 inputs are exact in float32: what is left is float32 accumulation.
    assert errors["logprobs_rel"] < 1e-5
    assert errors["entropy_rel"] < (1e-5 if dtype == torch.float32 else 1e-4)
    # Gradients come back in the input dtype: bf16 rounds them to 8 bits of mantissa.
    grad_tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    for name, grad in grads.items():
        assert grad.dtype == dtype, name
        assert errors[f"grad_{name}_rel"] < grad_tolerance, name


# -- an hf: model on cuda and on the CPU -----------------------------------------------------------
def load(model_dir: Path, device: str, dtype: str) -> Any:
    from evalharness.backends import load_backend
    from evalharness.backends.spec import parse_model_spec

    backend = load_backend(parse_model_spec(f"hf:{model_dir}", device=device, dtype=dtype))
    backend.model  # noqa: B018 - loads the weights
    return backend


def token_logprobs(backend: Any, text: str) -> torch.Tensor:
    """log p(token | prefix) of every token after the first, through the loaded model."""
    ids = torch.tensor([backend.tokenizer(text)["input_ids"]])
    model = backend.model
    with torch.inference_mode():
        logits = model(input_ids=ids.to(model.device)).logits.float()
    logprobs = torch.log_softmax(logits[0, :-1], dim=-1)
    return logprobs.gather(1, ids[0, 1:, None].to(model.device))[:, 0].double().cpu()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hf_model_on_cuda_agrees_with_the_cpu(tiny_model_dir: Path, dtype: str) -> None:
    from evalharness.engine.requests import ScoreRequest

    cpu, gpu = load(tiny_model_dir, "cpu", dtype), load(tiny_model_dir, "cuda", dtype)
    assert gpu.model.device.type == "cuda" and cpu.model.device.type == "cpu"
    assert gpu.model.dtype == cpu.model.dtype == getattr(torch, dtype)
    assert gpu.identity == cpu.identity  # same cache entries whichever device answered

    per_token = torch.cat([(token_logprobs(gpu, t) - token_logprobs(cpu, t)).abs() for t in TEXTS])
    requests = [
        ScoreRequest(continuation=t[len(t) // 2 :], context=t[: len(t) // 2]) for t in TEXTS
    ]
    sums = [
        abs(a.logprob - b.logprob)
        for a, b in zip(gpu.score(requests), cpu.score(requests), strict=True)
    ]
    measured = {
        "tokens": int(per_token.numel()),
        "per_token_max_abs": float(per_token.max()),
        "per_token_mean_abs": float(per_token.mean()),
        "continuation_sum_max_abs": max(sums),
        "tolerance": TOLERANCE[dtype],
        "gpu": torch.cuda.get_device_name(0),
    }
    record(f"hf_cuda_vs_cpu_{dtype}", measured)
    assert measured["per_token_max_abs"] <= TOLERANCE[dtype]["max"], measured
    assert measured["per_token_mean_abs"] <= TOLERANCE[dtype]["mean"], measured


# -- serve --------------------------------------------------------------------------------------
def test_serve_on_cuda_answers_as_the_model_on_cuda(tiny_model_dir: Path) -> None:
    from evalharness.engine.requests import GenerateRequest, Message, SamplingParams

    port = free_port()
    process = spawn_cli(
        "serve", "--model", f"hf:{tiny_model_dir}", "--device", "cuda", "--dtype", "float32",
        "--port", str(port), "--served-name", "tiny",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1][-2000:]
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(0.5)
        question = "Explain why the river is long."
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 12,
            "temperature": 0,
        }
        response = httpx.post(f"{url}/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        served = response.json()["choices"][0]["message"]["content"]
        on_gpu = gpu_processes()
        record("serve_process_listed_on_gpu", None if on_gpu is None else process.pid in on_gpu)
    finally:
        process.terminate()
        process.wait(timeout=30)
    local = load(tiny_model_dir, "cuda", "float32")
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12)
    (expected,) = local.generate([GenerateRequest((Message("user", question),), sampling)])
    assert served == expected.text
    if on_gpu is not None:
        assert process.pid in on_gpu, "the server process holds no memory on the GPU"


def gpu_processes() -> set[int] | None:
    """Ids of the processes holding memory on GPU 0, or None where NVML cannot say."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        found = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # no NVML, or a sandbox that hides other processes
        return None
    pids = {p.pid for p in found}
    return pids or None


# -- training ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("ieee_float32_after")
def test_one_dpo_step_trains_on_cuda(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from train_configs import train_config

    from evalharness.trainers.loop import Trainer

    rng = random.Random(0)
    rows = [
        {"prompt": phrase(rng), "chosen": " good water", "rejected": " bad cat dog"}
        for _ in range(16)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    config = train_config(
        "dpo",
        tiny_model_dir,
        data,
        out,
        max_steps=1,
        batch_size=4,
        learning_rate=1e-3,
        eval_fraction=0.25,
    )
    trainer = Trainer(config, progress=False)
    assert trainer.accelerator.device.type == "cuda"
    summary = trainer.run()
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert summary.steps == 1 and torch.isfinite(torch.tensor(summary.final["loss"]))
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


LETTERS_REWARD = """
def letters(prompt, completion, row):
    return float(sum(c.isalpha() for c in completion))
"""


@pytest.mark.usefixtures("ieee_float32_after")
@pytest.mark.parametrize("method", ["grpo", "rloo", "ppo", "online_dpo", "xpo", "nash_md", "gkd"])
def test_online_methods_train_on_cuda(method: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Every online method samples, scores and steps on the GPU (the policy, its reference, the
    sampler) and writes changed weights; `rollouts: auto` picks vLLM where it is installed."""
    from safetensors.torch import load_file
    from train_configs import train_config

    from evalharness.engine.training import run_training
    from evalharness.trainers import losses

    reward = tmp_path / "letters.py"
    reward.write_text(LETTERS_REWARD)
    rng = random.Random(0)
    rows = [{"prompt": phrase(rng), "completion": " good water"} for _ in range(8)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / method
    loss_args = {"teacher": f"hf:{tiny_model_dir}"} if method == "gkd" else {}
    config = train_config(
        method, tiny_model_dir, data, out, max_steps=2, batch_size=2, group_size=2,
        max_new_tokens=6, learning_rate=1e-3, reward=f"python:{reward}:letters",
        loss_args=loss_args,
    )  # fmt: skip
    summary = run_training(losses.method(method), config, progress=False)
    assert summary.steps == 2
    placement = json.loads((out / "train.json").read_text())["placement"]
    assert placement["device"].startswith("cuda")
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
