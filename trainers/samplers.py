"""Which sampler an online run draws its rollouts from: the `rollouts` setting.

`auto` (the default) takes vLLM where it pays: vllm importable and the run training on a CUDA
GPU. On a CPU the engine's start (~30 s) and the weight push after every step cost more than
`generate` saves on the models one trains there, and vLLM's CPU build lives in a venv of its
own (`make vllm-venv`), so `auto` means `hf` there; `rollouts: vllm` still runs it, which is how
the CPU tests do. A named `vllm` that cannot run is a one-line error before anything loads.
"""

from __future__ import annotations

from typing import Any

from evalharness.errors import InputError

from .rollouts import HFSampler, Prompt, Sampler


def choose_rollouts(setting: str, device: Any, *, load_in_4bit: bool = False) -> str:
    """`hf` or `vllm` for the run's `rollouts` setting on `device` (see the module docstring)."""
    from evalharness.backends.vllm import vllm_available

    if setting == "hf":
        return "hf"
    if setting == "vllm":
        if not vllm_available():
            raise InputError(
                "rollouts: vllm, but the vllm package is not installed: pip install "
                "'evalharness[vllm]' on a GPU machine, `make vllm-venv` on a CPU, or rollouts: hf"
            )
        if load_in_4bit:
            raise InputError(
                "rollouts: vllm cannot take weights from a 4-bit base; use rollouts: hf"
            )
        return "vllm"
    on_cuda = getattr(device, "type", str(device).partition(":")[0]) == "cuda"
    return "vllm" if on_cuda and not load_in_4bit and vllm_available() else "hf"


def build_sampler(
    kind: str,
    model: Any,
    tokenizer: Any,
    config: Any,
    prompts: list[Prompt],
    *,
    dtype: str,
    mixed_precision: str,
    device: Any,
) -> Sampler:
    """The run's sampler; a vLLM engine sized to the longest prompt plus `max_new_tokens`, in
    the dtype the policy computes in (`engine_dtype`)."""
    if kind == "hf":
        return HFSampler(
            model, tokenizer, temperature=config.temperature, max_new_tokens=config.max_new_tokens
        )
    from .vllm_rollouts import VLLMSampler, engine_spec

    longest = max((len(p.ids) for p in prompts), default=0)
    spec = engine_spec(
        config.model,
        engine_dtype(dtype, mixed_precision),
        max_model_len=longest + config.max_new_tokens,
        on_gpu=getattr(device, "type", None) == "cuda",
    )
    return VLLMSampler(
        model,
        tokenizer,
        spec,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
    )


def engine_dtype(weights: str, mixed_precision: str) -> str:
    """The dtype the policy's forward passes compute in: its weights', or under autocast (a
    float32 full fine-tune on a GPU, bf16 autocast by default) the autocast's, which samples
    as the policy computes at half the engine's memory and twice its speed."""
    return {"bf16": "bfloat16", "fp16": "float16"}.get(mixed_precision, weights)
