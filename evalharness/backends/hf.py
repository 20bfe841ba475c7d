"""`hf:` backend: a transformers causal LM, batched, loaded only when a request misses the cache.

The backend itself is loading and prompt encoding; generation is `hf_generation.py`,
log-likelihood scoring `hf_scoring.py`, the checkpoint's identity `checkpoints.py` and its
placement `local_model.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalharness.backends.context import causal_lm_limit
from evalharness.backends.hf_generation import HFGeneration
from evalharness.backends.hf_scoring import HFScoring
from evalharness.backends.local_model import (
    LocalModelBackend,
    Placement,
    input_device,
    load_pretrained,
)
from evalharness.backends.prompts import PromptEncoder, stop_token_ids
from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import Message, ScoreRequest


class HFBackend(HFGeneration, HFScoring, LocalModelBackend):
    """Batched generation (left padding, chat template) and continuation scoring."""

    identity_backend = "hf"
    placement: Placement

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self._prompts: PromptEncoder | None = None

    # -- loading -------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM

        self._tokenizer, self._model = load_pretrained(
            self.spec, self.directory, AutoModelForCausalLM, self.placement
        )
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token

    @property
    def model(self) -> Any:
        self._load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    def _on_device(self, tensor: Any) -> Any:
        """Inputs go where the model is: its device (the first one under a device map), for a
        loaded checkpoint and a model handed over by a training loop alike."""
        device = input_device(self.model)
        return tensor if device is None or tensor.device == device else tensor.to(device)

    @property
    def context_limit(self) -> int | None:
        """Tokens the model reads at most (prompt plus generated); None when nothing says."""
        return causal_lm_limit(self.model.config, self.tokenizer)

    def stop_token_ids(self) -> list[int]:
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        return stop_token_ids(self.tokenizer.eos_token_id, configured)

    # -- prompts -------------------------------------------------------------------------
    @property
    def prompts(self) -> PromptEncoder:
        if self._prompts is None:
            self._prompts = PromptEncoder(self.tokenizer)
        return self._prompts

    def render_chat(self, messages: Sequence[Message]) -> str:
        return self.prompts.render_chat(messages)

    def encode(self, text: str, *, templated: bool) -> list[int]:
        return self.prompts.encode(text, templated=templated)

    def encode_pair(self, request: ScoreRequest) -> tuple[list[int], list[int]]:
        return self.prompts.encode_pair(request)
