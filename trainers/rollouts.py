"""Sampling for the online methods: prompts as the loop holds them, completions, padded batches.

Every online method (GRPO, RLOO, PPO, online DPO, GKD) samples completions of its prompts from
the current policy and scores them with the same fused path the offline methods use; this module
is the sampling half. A `Sampler` returns token ids cut after the first EOS; `sync` is called
after every optimizer step so an engine holding its own copy of the weights (vLLM) samples from
the policy being trained. The `hf` sampler generates with the policy itself, so it has nothing
to sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .models import core_model


@dataclass(frozen=True)
class Prompt:
    """One training prompt: its chat messages (for judges), token ids (for the policy), data row
    (for verifiable rewards that read an `answer` or a test)."""

    messages: tuple[dict[str, str], ...]
    ids: list[int]
    row: Mapping[str, Any] = field(default_factory=dict)


def prompt_messages(prompt: Any) -> tuple[dict[str, str], ...]:
    """The prompt as chat messages, for the reward's view of the dialogue."""
    if isinstance(prompt, str):
        return ({"role": "user", "content": prompt},)
    return tuple(dict(m) for m in prompt)


class Sampler(Protocol):
    """Where completions come from: the policy itself (`hf`) or an engine synced to it."""

    def sample(self, prompt_ids: list[int], n: int, seed: int) -> list[list[int]]: ...

    def sync(self, model: Any) -> None: ...

    def close(self) -> None: ...


def cut_after_eos(row: list[int], eos: int | None, pad: int) -> list[int]:
    """A generated row up to and including its first EOS; never empty (a lone EOS or pad)."""
    if eos is not None and eos in row:
        row = row[: row.index(eos) + 1]
    return row or [eos if eos is not None else pad]


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[int],
    n: int,
    seed: int,
    *,
    temperature: float,
    max_new_tokens: int,
    logits_processor: Any = None,
) -> list[list[int]]:
    """`n` seeded completions of one prompt from `model` with `generate` (cut after EOS): plain
    sampling at `temperature`, as TRL's online trainers sample (transformers' default top_k=50
    would truncate the distribution the losses assume). `logits_processor` reshapes each step's
    logits (Nash-MD's mixture with the reference)."""
    from transformers import LogitsProcessorList

    torch.manual_seed(seed)
    model = core_model(model)
    device = next(model.parameters()).device
    inputs = torch.tensor([prompt_ids] * n, device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([logits_processor] if logits_processor else []),
        )
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    return [cut_after_eos(row, eos, pad) for row in out[:, len(prompt_ids) :].tolist()]


class HFSampler:
    """`n` completions of a prompt from the policy with `generate`, seeded per call, drawn from
    its softmax at `temperature` (no top-k or top-p: the policy-gradient losses assume samples
    from the policy itself, and the vLLM sampler draws the same way)."""

    def __init__(
        self, model: Any, tokenizer: Any, *, temperature: float, max_new_tokens: int
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.max_new_tokens = temperature, max_new_tokens

    def sample(self, prompt_ids: list[int], n: int, seed: int) -> list[list[int]]:
        return generate_completions(
            self.model,
            self.tokenizer,
            prompt_ids,
            n,
            seed,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
        )

    def sync(self, model: Any) -> None:
        """Nothing to do: this sampler generates with the policy's own weights."""

    def close(self) -> None:
        """Nothing held beyond the policy."""


def rollout_batch(
    rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int, device: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """Right-padded (prompt + completion) rows with only completion tokens labelled."""
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (prompt, completion) in enumerate(rows):
        ids = prompt + completion
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, len(prompt) : len(ids)] = torch.tensor(completion)
        attention[r, : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    return {key: value.to(device) for key, value in batch.items()}
