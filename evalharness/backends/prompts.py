"""Prompt text and token ids, the same for every local backend (`hf:`, `vllm:`).

Two backends that render chats and split score requests differently would give different
answers for the same request and make a parity check meaningless, so both use this one class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalharness.engine.requests import Message, ScoreRequest
from evalharness.errors import InputError


def stop_token_ids(tokenizer_eos: int | None, configured: int | list[int] | None) -> list[int]:
    """The tokenizer's EOS plus the generation config's `eos_token_id` (an id or a list): every
    local backend stops on the same tokens."""
    ids = {tokenizer_eos}
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


class PromptEncoder:
    """Chat rendering and tokenisation over a transformers tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render_chat(self, messages: Sequence[Message]) -> str:
        """The chat prompt with a generation prompt; plain `role: text` lines without a template."""
        as_dicts = [{"role": m.role, "content": m.content} for m in messages]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                as_dicts, tokenize=False, add_generation_prompt=True
            )
        lines = [f"{m.role}: {m.content}" for m in messages]
        return "\n".join(lines) + "\nassistant:"

    def encode(self, text: str, *, templated: bool) -> list[int]:
        # A chat-rendered prompt already holds its special tokens; raw text gets the tokenizer's.
        return self.tokenizer(text, add_special_tokens=not templated)["input_ids"]

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        return self.encode(self.render_chat(messages), templated=True)

    def encode_pair(self, request: ScoreRequest) -> tuple[list[int], list[int]]:
        """Context and continuation token ids, split exactly as lm-evaluation-harness does.

        Trailing whitespace of the context moves to the continuation; the whole text is encoded
        once and the continuation is whatever follows the context's own encoding (even when a
        token straddles the boundary). An empty context conditions on the BOS (else EOS) token.
        """
        if request.messages is not None:
            context, templated = self.render_chat(request.messages) + request.context, True
        else:
            context, templated = request.context, False
        if not context:
            continuation = self.tokenizer(request.continuation, add_special_tokens=False)
            continuation_ids = continuation["input_ids"]
            prefix = self.boundary_token_id()
            if continuation_ids and continuation_ids[0] == prefix:
                return continuation_ids[:1], continuation_ids[1:]
            return [prefix], continuation_ids
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + request.continuation
        whole = self._encode_scored(stripped + continuation, templated)
        context_ids = self._encode_scored(stripped, templated)
        return context_ids, whole[len(context_ids) :]

    def encode_scored_pairs(
        self, requests: Sequence[ScoreRequest]
    ) -> list[tuple[list[int], list[int]]]:
        """`encode_pair` for each request; one with no continuation tokens left is an error."""
        pairs = [self.encode_pair(r) for r in requests]
        for request, (_, continuation) in zip(requests, pairs, strict=True):
            if not continuation:
                raise InputError(
                    "score request has no continuation tokens left after its context (empty, "
                    f"or merged into the context's last token): {request!r}"[:300]
                )
        return pairs

    def boundary_token_id(self) -> int | None:
        """BOS, else EOS: what an empty context conditions on."""
        prefix = self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id if prefix is None else prefix

    def _encode_scored(self, text: str, templated: bool) -> list[int]:
        """Raw text gets the tokenizer's special tokens unless it already starts with BOS."""
        prefix = self.boundary_token_id()
        prefix_text = self.tokenizer.decode([prefix]) if prefix is not None else ""
        if not templated and prefix_text and text.startswith(prefix_text):
            templated = True
        return self.encode(text, templated=templated)
