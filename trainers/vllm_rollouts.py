"""Rollouts through a vLLM engine in the training process, synced to the policy after every step.

Sampling is most of an online run's time; vLLM's batched decoding makes it several times faster
than `generate` on a GPU. The engine is the evaluator's (`evalharness.backends.vllm`: the same
checkpoint resolution, dtype rule and engine options) with three changes for training:

- It runs in this process (vLLM's engine core otherwise runs in a child process), so the
  policy's weights reach it as tensors, without a copy through a socket, as TRL's colocate
  mode does.
- After every optimizer step `sync` pushes the policy's weights into it with vLLM's in-place
  `reload_weights` (which redoes the per-layer processing a load does, e.g. the CPU build's
  packed GEMM weights) and drops the prefix cache, whose keys and values the old weights
  computed. Adapters are merged into the pushed weights (one layer at a time, the base
  restored bit for bit afterwards, so merging never drifts the base); weights are cast to the
  engine's dtype.
- On a GPU it takes `COLOCATED_GPU_SHARE` of the memory rather than the evaluator's 0.9: the
  policy, its gradients and the optimizer state share the card.

Samples come from the policy's softmax at the run's temperature (no top-k or top-p), seeded
per call, as `HFSampler` draws them.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from evalharness.backends.prompts import stop_token_ids
from evalharness.backends.spec import ALIASES, ModelSpec, parse_model_spec
from evalharness.errors import InputError

from .models import core_model
from .rollouts import cut_after_eos

#: vLLM keeps a request's seed as an int64, and seeds its `n` samples `seed`, `seed + 1`, ...
_SEED_BITS = 62


def call_seed(seed: int) -> int:
    """The seed vLLM is given for a call the run seeds `seed`. vLLM draws a call's i-th sample
    from `seed + i`, and the run seeds its per-prompt calls with consecutive numbers: unspread,
    prompt k's second sample and prompt k+1's first would draw the same random numbers
    (correlated, not independent, samples). A reproducible 62-bit mix starts each call's
    streams far from every other call's."""
    return random.Random(seed).getrandbits(_SEED_BITS)


#: Share of a GPU's memory the engine takes for weights and KV cache beside the training run
#: (TRL's colocate examples use the same); on the CPU build the evaluator's RAM share applies.
COLOCATED_GPU_SHARE = 0.3
_IN_PROCESS = "VLLM_ENABLE_V1_MULTIPROCESSING"


def engine_spec(model: str, dtype: str, *, max_model_len: int | None, on_gpu: bool) -> ModelSpec:
    """The `vllm:` spec of the training model (`hf:DIR`, a hub id or the built-in alias) in the
    policy's resolved dtype."""
    spec = parse_model_spec(model)
    if spec.backend == "builtin":  # `vllm:<alias>` is how the evaluator names it
        name = next(a for a, target in ALIASES.items() if target == f"builtin:{spec.name}")
    elif spec.backend in ("hf", "vllm"):
        name = spec.name
    else:
        raise InputError(f"rollouts: vllm needs a local or hub model (hf:...), not {model!r}")
    return dataclasses.replace(
        spec,
        backend="vllm",
        name=name,
        raw=f"vllm:{name}",
        dtype=dtype,
        max_model_len=max_model_len,
        gpu_memory_utilization=COLOCATED_GPU_SHARE if on_gpu else None,
    )


@contextmanager
def _engine_in_this_process() -> Iterator[None]:
    """vLLM reads where its engine core runs from the environment when the engine is built."""
    from vllm import envs

    saved = os.environ.get(_IN_PROCESS)
    os.environ[_IN_PROCESS] = "0"
    envs.disable_envs_cache()  # an engine built earlier may have frozen the old value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_IN_PROCESS, None)
        else:
            os.environ[_IN_PROCESS] = saved


class VLLMSampler:
    """`n` completions of a prompt from a vLLM engine holding the policy's current weights."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        spec: ModelSpec,
        *,
        temperature: float,
        max_new_tokens: int,
    ) -> None:
        from evalharness.backends.vllm import VLLMBackend, quiet_vllm

        quiet_vllm()
        from transformers import GenerationConfig

        # The evaluator's checkpoint resolution, engine options and start (a failed start is
        # its one-line error naming the `vllm:` spec).
        backend = VLLMBackend(spec)
        with _engine_in_this_process():
            self.llm = backend.llm
        self.dtype = getattr(torch, backend.placement.dtype)
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        try:
            configured = GenerationConfig.from_pretrained(backend.directory).eos_token_id
        except OSError:
            configured = None
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.stop_ids = stop_token_ids(self.eos, configured)  # what `generate` stops on
        self.sync(model)  # adapters (or PiSSA-style inits) already differ from the checkpoint

    def sample(self, prompt_ids: list[int], n: int, seed: int) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=n,
            seed=call_seed(seed),
            temperature=self.temperature,
            max_tokens=self.max_new_tokens,
            stop_token_ids=self.stop_ids,
            detokenize=False,
        )
        (output,) = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(prompt_ids))], params, use_tqdm=False
        )
        return [cut_after_eos(list(o.token_ids), self.eos, self.pad) for o in output.outputs]

    def sync(self, model: Any) -> None:
        """Push the policy's weights (adapters merged, in the engine's dtype) into the engine."""
        with torch.no_grad():
            self.llm.collective_rpc(
                "reload_weights",
                kwargs={
                    "weights_iterator": policy_weights(model, self.dtype),
                    "is_checkpoint_format": True,
                },
            )
        self.llm.apply_model(_repack_tied_cpu_head)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down and free its memory for the checkpoint save."""
        llm, self.llm = getattr(self, "llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if callable(getattr(core, "shutdown", None)):
            core.shutdown()


def _repack_tied_cpu_head(model: Any) -> None:
    """On vLLM's CPU build the LM head keeps a packed copy of its weight for its GEMM; a head
    tied to the embeddings receives no weight of its own in a reload, so that copy would stay
    the old one: pack it again from the (reloaded) shared weight. Nothing to do on a GPU."""
    head = getattr(model, "lm_head", None)
    weight = getattr(head, "weight", None)
    if hasattr(head, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.numel():
        head.quant_method.process_weights_after_loading(head)


def policy_weights(model: Any, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under the checkpoint's names, adapters merged, cast to `dtype`, in
    the model's own order: vLLM processes a layer (fusing q/k/v, repacking) once all its weights
    have arrived and holds the ones that came early, so an adapted `q_proj` sent apart from its
    `k_proj` would keep a copy of every layer's adapted weights alive until the end.

    An adapted layer is merged on its own, its merged weights copied out, then unmerged and its
    base restored from a copy taken before: `unmerge` subtracts in the weights' dtype, which in
    bfloat16 would leave the base (the reference, for most adapters) slightly off each step.
    """
    core = core_model(model)
    tuned = _tuner_layers(core) if core is not model else {}
    sent: set[str] = set()
    for name, weight in core.named_parameters():
        owner = _adapted_layer(name, tuned)
        if owner is not None:  # sent merged, with its first weight
            if owner not in sent:
                sent.add(owner)
                with _merged(tuned[owner]) as base:
                    for part, merged in base.named_parameters(recurse=False):
                        yield f"{_replaced(owner)}.{part}", merged.detach().to(dtype, copy=True)
        elif ".original_module." not in name:  # a trained copy (`modules_to_save`) replaces it
            yield name.replace(".modules_to_save.default.", "."), weight.detach().to(dtype)


def _adapted_layer(name: str, tuned: dict[str, Any]) -> str | None:
    """The adapted layer a parameter belongs to (its base weight or the adapter's own)."""
    parts = name.split(".")
    return next(
        (o for o in (".".join(parts[:i]) for i in range(1, len(parts))) if o in tuned), None
    )


def _replaced(layer: str) -> str:
    """The name of the module an adapted layer stands in for: itself, except trained token
    rows (LoRA's `trainable_token_indices`), whose layer sits inside a wrapper of the
    embedding as `token_adapter`."""
    return layer.removesuffix(".token_adapter")


def _tuner_layers(core: Any) -> dict[str, Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m for name, m in core.named_modules() if isinstance(m, BaseTunerLayer)}


@contextmanager
def _merged(layer: Any) -> Iterator[Any]:
    """`layer`'s base layer with the active adapters merged in, restored exactly on exit."""
    base = layer.get_base_layer()
    saved = [weight.detach().clone() for weight in base.parameters(recurse=False)]
    layer.merge()
    try:
        yield base
    finally:
        layer.unmerge()
        for weight, copy in zip(base.parameters(recurse=False), saved, strict=True):
            weight.data.copy_(copy)
