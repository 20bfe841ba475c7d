"""`rm:` backend: a sequence-classification reward model that scores a dialogue's last answer.

Reward models (OpenAssistant deberta, Skywork, ArmoRM, ones trained by `trainers/`) are
`AutoModelForSequenceClassification` checkpoints with one output logit: the reward. The dialogue
goes through the tokenizer's chat template when it has one, as the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalharness.backends.base import Backend
from evalharness.backends.hf import load_pretrained, read_chat_template, resolve_local_dir
from evalharness.errors import InputError
from evalharness.modelspec import ModelSpec
from evalharness.requests import (
    GenerateRequest,
    GenerateResult,
    Message,
    RewardRequest,
    RewardResult,
    ScoreRequest,
    ScoreResult,
    sha256_hex,
)


class RewardModelBackend(Backend):
    """Batched reward scoring; weights load on the first request that misses the cache."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = spec.batch_size
        self.directory, weights = resolve_local_dir(spec)
        template = read_chat_template(self.directory)
        self._identity = {
            "backend": "reward_model",
            "name": spec.raw,
            **weights,
            "dtype": spec.dtype,
            "chat_template_sha256": sha256_hex(template) if template else None,
        }
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification

        self._tokenizer, model = load_pretrained(
            self.spec, self.directory, AutoModelForSequenceClassification
        )
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._tokenizer.padding_side = "right"
        if model.config.num_labels != 1:
            raise InputError(
                f"rm:{self.spec.name} has {model.config.num_labels} output labels; a reward "
                "model has exactly one"
            )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self._tokenizer.pad_token_id
        self._model = model

    def render(self, messages: Sequence[Message]) -> str:
        as_dicts = [{"role": m.role, "content": m.content} for m in messages]
        if self._tokenizer.chat_template:
            return self._tokenizer.apply_chat_template(as_dicts, tokenize=False)
        return "\n".join(f"{m.role}: {m.content}" for m in messages)

    def reward(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        import torch

        self._load()
        texts = [self.render(r.messages) for r in requests]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rewards: dict[int, float] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            templated = bool(self._tokenizer.chat_template)
            batch = self._tokenizer(
                [texts[i] for i in chunk],
                return_tensors="pt",
                padding=True,
                add_special_tokens=not templated,
            )
            with torch.inference_mode():
                logits = self._model(**batch).logits.float()
            for index, value in zip(chunk, logits[:, 0].tolist(), strict=True):
                rewards[index] = float(value)
        return [RewardResult(reward=rewards[i]) for i in range(len(requests))]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        raise InputError(f"rm:{self.spec.name} is a reward model: it cannot generate")

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise InputError(f"rm:{self.spec.name} is a reward model: it cannot score continuations")
