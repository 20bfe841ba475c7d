"""The two kinds of work a task asks of a model, and what comes back.

Requests are frozen, hashable and serialise to canonical JSON, so the store can key its cache on
`model identity + request` and a re-run finds every answer it already paid for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; `temperature == 0` means greedy decoding."""

    temperature: float = 0.0
    max_new_tokens: int = 512
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class GenerateRequest:
    """Generate an assistant reply to `messages` through the model's chat template."""

    messages: tuple[Message, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    kind: Literal["generate"] = "generate"


@dataclass(frozen=True)
class CompleteRequest:
    """Continue raw text, with no chat template (few-shot prompts, base models).

    Generation stops at the first of `stop` (e.g. a newline after a one-line label) found in the
    generated text; the stop string itself is not part of the result. The text comes back
    stripped unless `verbatim`: lm-eval's `generate_until` hands the continuation exactly as
    decoded to its filters and metrics, where a leading space or newline can decide a match.
    """

    prompt: str
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    # Left out of the stored request (and so of its cache key) when false: requests made before
    # the flag existed keep their keys and cached answers.
    verbatim: bool = field(default=False, metadata={"omit_when_default": True})
    kind: Literal["complete"] = "complete"


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probability of `continuation` after a context.

    The context is either raw text (`context`) or chat `messages` rendered with the model's chat
    template and a generation prompt, followed by `context` as the start of the assistant turn
    (e.g. "Rating: [[" for a judge read from its own probabilities).
    """

    continuation: str
    context: str = ""
    messages: tuple[Message, ...] | None = None
    kind: Literal["score"] = "score"


@dataclass(frozen=True)
class RewardRequest:
    """A reward model's scalar score for the last assistant turn of `messages`."""

    messages: tuple[Message, ...]
    kind: Literal["reward"] = "reward"


@dataclass(frozen=True)
class ClassifyRequest:
    """A classifier model's label probabilities for `text` (and `text_pair`, if the model reads
    pairs)."""

    text: str
    text_pair: str | None = None
    kind: Literal["classify"] = "classify"


Request = GenerateRequest | CompleteRequest | ScoreRequest | RewardRequest | ClassifyRequest


# `truncated` on a result: its input was longer than the model's context and was cut to fit
# (see `evalharness.backends.context` for what is cut); the engine counts and warns about it.
# Stored only when true, so results stored before the flag existed read as not truncated.


@dataclass(frozen=True)
class GenerateResult:
    text: str
    n_prompt_tokens: int = 0
    n_generated_tokens: int = 0
    finish_reason: str = "stop"
    truncated: bool = False


@dataclass(frozen=True)
class ScoreResult:
    logprob: float
    n_tokens: int
    is_greedy: bool
    truncated: bool = False


@dataclass(frozen=True)
class RewardResult:
    reward: float
    truncated: bool = False


@dataclass(frozen=True)
class ClassifyResult:
    probabilities: dict[str, float]
    truncated: bool = False


@dataclass(frozen=True)
class FailedResult:
    """A request the backend could not answer after its own retries (HTTP 429/5xx, timeout).

    Only judges receive these: the item stays unjudged, is counted, and a re-run asks again.
    Never stored in the cache.
    """

    error: str


Result = GenerateResult | ScoreResult | RewardResult | ClassifyResult


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (nested) to plain JSON values; a field marked `omit_when_default` is left out
    while it holds its default (see `CompleteRequest.verbatim`)."""
    data = asdict(obj)
    for spec in fields(obj) if is_dataclass(obj) else ():
        if spec.metadata.get("omit_when_default") and getattr(obj, spec.name) == spec.default:
            data.pop(spec.name, None)
    return data


def result_to_json(result: Result) -> dict[str, Any]:
    """A result as stored: `truncated` only when true, so a result that fit is stored exactly
    as before the flag existed."""
    data = asdict(result)
    if not data.get("truncated"):
        data.pop("truncated", None)
    return data


def canonical_json(value: Any) -> str:
    """Stable JSON used for hashing: sorted keys, no whitespace."""
    if hasattr(value, "__dataclass_fields__"):
        value = to_jsonable(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def result_from_json(data: dict[str, Any]) -> Result:
    if "logprob" in data:
        return ScoreResult(**data)
    if "reward" in data:
        return RewardResult(**data)
    if "probabilities" in data:
        return ClassifyResult(**data)
    return GenerateResult(**data)
