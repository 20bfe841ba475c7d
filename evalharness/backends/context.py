"""How many tokens a local model can read, and what happens to an input that is longer.

An over-long input is never silent: a model given more positions than it was built for either
crashes (learned position tables) or quietly degrades (rotary positions past the trained
length), and a tokenizer's `truncation=True` cuts without saying so. Every local backend
therefore fits its inputs here and marks the result `truncated`; the engine counts those per
task and warns (README, "Context limits"). The policy:

- generation: a prompt whose tokens plus `max_new_tokens` exceed the context keeps its last
  `limit - max_new_tokens` tokens. The start goes, as lm-evaluation-harness cuts it: the
  question of a long few-shot prompt (LIConBench) is at its end, and the answer keeps the
  budget the task asked for.
- scoring: the context loses its start until context and continuation fit; the continuation,
  the scored text, is never cut (one that alone does not fit is an error).
- sequence classifiers (reward models, classifiers): the tokenizer truncates at the limit on
  its own side (usually the end), as the model's authors configured it.
"""

from __future__ import annotations

from typing import Any

from evalharness.errors import InputError

#: Lengths at or above this are placeholders meaning "no limit", not a context: transformers
#: sets `model_max_length` to int(1e30) when a tokenizer names none.
NO_LIMIT = 10_000_000
#: Config fields that hold a model's context length, by architecture family.
CONFIG_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def sane(value: Any) -> int | None:
    """`value` as a context length, or None when it is missing or a "no limit" placeholder."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value < NO_LIMIT else None


def config_limit(config: Any) -> int | None:
    """The context length a model config states (a multimodal config's `text_config` too)."""
    for source in (config, getattr(config, "text_config", None)):
        for name in CONFIG_FIELDS:
            value = sane(getattr(source, name, None))
            if value is not None:
                return value
    return None


def causal_lm_limit(config: Any, tokenizer: Any) -> int | None:
    """A causal LM's context: its config's, else its tokenizer's `model_max_length`.

    The config states what the model was trained with; a causal LM tokenizer's
    `model_max_length` is often a stale default (the test tokenizer says 512 for a 4096-token
    model), so it is read only when the config names nothing.
    """
    return config_limit(config) or sane(getattr(tokenizer, "model_max_length", None))


def classifier_limit(config: Any, tokenizer: Any) -> int | None:
    """A sequence classifier's context: the smaller of its config's and its tokenizer's.

    Encoders count special offsets in their position table (RoBERTa: 514 positions for 512
    tokens) and their tokenizers state the usable length, which is what the bare
    `truncation=True` used before; a config shorter than its tokenizer is the hard limit.
    """
    limits = [
        value
        for value in (config_limit(config), sane(getattr(tokenizer, "model_max_length", None)))
        if value is not None
    ]
    return min(limits) if limits else None


def fit_prompt(prompt: list[int], max_new_tokens: int, limit: int | None) -> tuple[list[int], bool]:
    """The prompt left-truncated so it and `max_new_tokens` fit in `limit`; whether it was cut."""
    if limit is None or len(prompt) + max_new_tokens <= limit:
        return prompt, False
    room = limit - max_new_tokens
    if room < 1:
        raise InputError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
            f"{limit}-token context; ask for fewer new tokens"
        )
    return prompt[-room:], True


def fit_scored(
    context: list[int], continuation: list[int], room: int | None
) -> tuple[list[int], bool]:
    """The context left-truncated so that context + continuation hold at most `room` tokens.

    `room` depends on the backend: `hf:` reads all but the last token (limit + 1, exactly
    lm-evaluation-harness's cut), vLLM needs the whole text as a prompt below its limit.
    """
    if room is None or len(context) + len(continuation) <= room:
        return context, False
    keep = room - len(continuation)
    if keep < 1:
        raise InputError(
            f"a score continuation of {len(continuation)} tokens does not fit the model's "
            f"context ({room} tokens with its context)"
        )
    return context[-keep:], True
