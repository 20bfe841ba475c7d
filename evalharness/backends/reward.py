"""`rm:` and `clf:` backends: sequence-classification models.

Reward models (OpenAssistant deberta, Skywork, ones trained by `trainers/`) are
`AutoModelForSequenceClassification` checkpoints with one output logit: the reward. The dialogue
goes through the tokenizer's chat template when it has one, as the model was trained on.
Classifiers (e.g. a refusal or safety classifier) have several labels and answer
`ClassifyRequest`s with the probability of each label named in the model's `id2label`.

An input longer than the model's context (`classifier_limit`) is truncated by the tokenizer at
that length, on its configured side, and its result says `truncated`.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalharness.backends.context import classifier_limit
from evalharness.backends.local_model import LocalModelBackend, input_device, load_pretrained
from evalharness.engine.requests import (
    ClassifyRequest,
    ClassifyResult,
    GenerateRequest,
    GenerateResult,
    Message,
    RewardRequest,
    RewardResult,
    ScoreRequest,
    ScoreResult,
)
from evalharness.errors import InputError


class RewardModelBackend(LocalModelBackend):
    """Batched reward scoring and classification; weights load on the first uncached request.

    Identified by the same rules as a causal LM: every file of the checkpoint, the resolved
    dtype (not the device), the template.
    """

    identity_backend = "sequence_classifier"

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification

        self._tokenizer, model = load_pretrained(
            self.spec, self.directory, AutoModelForSequenceClassification, self.placement
        )
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._tokenizer.padding_side = "right"
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self._tokenizer.pad_token_id
        self._model = model

    def render(self, messages: Sequence[Message]) -> str:
        as_dicts = [{"role": m.role, "content": m.content} for m in messages]
        if self._tokenizer.chat_template:
            return self._tokenizer.apply_chat_template(as_dicts, tokenize=False)
        return "\n".join(f"{m.role}: {m.content}" for m in messages)

    def _logits(
        self, texts: list[str], pairs: list[str | None] | None = None, templated: bool = False
    ) -> list[tuple[list[float], bool]]:
        """Output logits per text, batched by length, and whether the text was truncated."""
        import torch

        limit = classifier_limit(self._model.config, self._tokenizer)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        found: dict[int, tuple[list[float], bool]] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            chunk_pairs = [pairs[i] for i in chunk] if pairs else None
            inputs = (
                [texts[i] for i in chunk],
                chunk_pairs if chunk_pairs and all(p is not None for p in chunk_pairs) else None,
            )
            # Lengths before truncation: the tokenizer cuts without saying so.
            full = self._tokenizer(*inputs, add_special_tokens=not templated)["input_ids"]
            batch = self._tokenizer(
                *inputs,
                return_tensors="pt",
                padding=True,
                truncation=limit is not None,
                max_length=limit,
                add_special_tokens=not templated,
            )
            device = input_device(self._model)
            with torch.inference_mode():
                logits = self._model(**batch.to(device)).logits.float()
            for index, ids, row in zip(chunk, full, logits.tolist(), strict=True):
                found[index] = (row, limit is not None and len(ids) > limit)
        return [found[i] for i in range(len(texts))]

    def reward(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        self._load()
        if self._model.config.num_labels != 1:
            raise InputError(
                f"{self.spec.raw} has {self._model.config.num_labels} output labels; a reward "
                "model has exactly one"
            )
        texts = [self.render(r.messages) for r in requests]
        rows = self._logits(texts, templated=bool(self._tokenizer.chat_template))
        return [RewardResult(reward=row[0], truncated=cut) for row, cut in rows]

    def classify(self, requests: Sequence[ClassifyRequest]) -> list[ClassifyResult]:
        import math

        self._load()
        labels = self._model.config.id2label
        if len(labels) < 2:
            raise InputError(f"{self.spec.raw} has one output: use it as rm:, not clf:")
        rows = self._logits([r.text for r in requests], [r.text_pair for r in requests])
        results = []
        for row, cut in rows:
            top = max(row)
            weights = [math.exp(v - top) for v in row]
            total = sum(weights)
            probabilities = {str(labels[i]): weights[i] / total for i in range(len(row))}
            results.append(ClassifyResult(probabilities, truncated=cut))
        return results

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        raise InputError(f"{self.spec.raw} is a classification model: it cannot generate")

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise InputError(f"{self.spec.raw} is a classification model: it cannot score text")
