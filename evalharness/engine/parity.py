"""Backend parity: do two backends of one model give the same greedy answers and log-probs?

A faster backend is only a drop-in replacement if its numbers match: `evalharness parity
--a hf:M --b vllm:M` runs a fixed, authored prompt set through both, greedy generation and
continuation scoring, and reports how many greedy answers are identical and the largest
log-prob difference. Backends run one after the other, so two engines never share memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evalharness.backends import Backend
from evalharness.engine.requests import GenerateRequest, Message, SamplingParams, ScoreRequest

#: Default tolerance on |log p_A - log p_B| of one continuation (a sum over its tokens, in
#: nats). Two float32 implementations of one model differ by summation order only; 0.05 nats
#: over a continuation of ~10-30 tokens is well above that and far below a real difference
#: (a different chat template or tokenisation moves log-probs by whole nats).
DEFAULT_TOLERANCE = 0.05
DEFAULT_MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class ParityItem:
    """One prompt: its greedy answer is compared, and `continuation` is scored after it."""

    id: str
    prompt: str
    continuation: str
    #: Raw-text scoring context (no chat template) instead of the chat prompt.
    raw_context: str | None = None


PARITY_ITEMS: tuple[ParityItem, ...] = (
    ParityItem("capital", "What is the capital of France?", "The capital of France is Paris."),
    ParityItem("arithmetic", "What is 12 times 7?", "12 times 7 is 84."),
    ParityItem(
        "haiku",
        "Write a haiku about autumn leaves.",
        "Crimson leaves drifting\non the cold and quiet stream\nsummer says goodbye",
    ),
    ParityItem(
        "list",
        "Name three primary colours.",
        "The three primary colours are red, yellow and blue.",
    ),
    ParityItem(
        "code",
        "Write a Python function that returns the square of a number.",
        "def square(x):\n    return x * x",
    ),
    ParityItem(
        "advice",
        "Give me one tip for sleeping better.",
        "Keep a regular schedule: go to bed and wake up at the same time every day.",
    ),
    ParityItem(
        "definition",
        "What is photosynthesis, in one sentence?",
        "Photosynthesis is the process by which plants turn light, water and carbon dioxide "
        "into sugar and oxygen.",
    ),
    ParityItem(
        "translate",
        "Translate 'good morning' into Spanish.",
        "'Good morning' in Spanish is 'buenos días'.",
    ),
    ParityItem(
        "reasoning",
        "If all cats are animals and Tom is a cat, what is Tom?",
        "Tom is an animal.",
    ),
    ParityItem(
        "summary",
        "Summarise in one line: The meeting moved from Monday to Wednesday because the room "
        "was booked.",
        "The meeting is now on Wednesday because the room was taken on Monday.",
    ),
    ParityItem(
        "raw-story",
        "Continue the story: Once upon a time, a small robot",
        " found a flower growing between two stones.",
        raw_context="Once upon a time, a small robot",
    ),
    ParityItem(
        "raw-fact",
        "Complete: Water boils at",
        " 100 degrees Celsius at sea level.",
        raw_context="Water boils at",
    ),
)


@dataclass
class ParityReport:
    """What `evalharness parity --json` prints (`n`, `greedy_identical`, `max_abs_logprob_diff`
    first; the rest says which prompts differ and by how much)."""

    a: str
    b: str
    n: int
    greedy_identical: float
    max_abs_logprob_diff: float
    mean_abs_logprob_diff: float
    tolerance: float
    max_new_tokens: int
    greedy_mismatches: list[dict[str, Any]] = field(default_factory=list)
    logprob_mismatches: list[dict[str, Any]] = field(default_factory=list)
    #: Both backends split every continuation into the same number of tokens (else they
    #: scored different text and the log-probs are not comparable).
    same_tokens: bool = True

    @property
    def passed(self) -> bool:
        return (
            self.same_tokens
            and self.greedy_identical == 1.0
            and self.max_abs_logprob_diff <= self.tolerance
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "greedy_identical": self.greedy_identical,
            "max_abs_logprob_diff": self.max_abs_logprob_diff,
            "mean_abs_logprob_diff": self.mean_abs_logprob_diff,
            "tolerance": self.tolerance,
            "max_new_tokens": self.max_new_tokens,
            "same_tokens": self.same_tokens,
            "passed": self.passed,
            "a": self.a,
            "b": self.b,
            "greedy_mismatches": self.greedy_mismatches,
            "logprob_mismatches": self.logprob_mismatches,
        }


@dataclass(frozen=True)
class BackendAnswers:
    """One backend's greedy texts and continuation log-probs, in item order."""

    texts: list[str]
    logprobs: list[float]
    n_tokens: list[int]


def parity_requests(
    items: Sequence[ParityItem], max_new_tokens: int
) -> tuple[list[GenerateRequest], list[ScoreRequest]]:
    greedy = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    generate = [GenerateRequest((Message("user", item.prompt),), greedy) for item in items]
    score = [
        ScoreRequest(item.continuation, context=item.raw_context)
        if item.raw_context is not None
        else ScoreRequest(item.continuation, messages=(Message("user", item.prompt),))
        for item in items
    ]
    return generate, score


def answer_with(
    backend: Backend, items: Sequence[ParityItem], max_new_tokens: int
) -> BackendAnswers:
    """Run the prompt set through one backend (and release it afterwards)."""
    generate, score = parity_requests(items, max_new_tokens)
    try:
        texts = [r.text for r in backend.generate(generate)]
        scores = backend.score(score)
    finally:
        backend.close()
    return BackendAnswers(texts, [s.logprob for s in scores], [s.n_tokens for s in scores])


def compare_answers(
    a_name: str,
    b_name: str,
    items: Sequence[ParityItem],
    a: BackendAnswers,
    b: BackendAnswers,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> ParityReport:
    if not items:
        raise ValueError("parity needs at least one prompt")
    greedy_mismatches = [
        {"id": item.id, "a": text_a, "b": text_b}
        for item, text_a, text_b in zip(items, a.texts, b.texts, strict=True)
        if text_a != text_b
    ]
    diffs = [abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)]
    logprob_mismatches = [
        {
            "id": item.id,
            "a": lp_a,
            "b": lp_b,
            "abs_diff": diff,
            "n_tokens_a": n_a,
            "n_tokens_b": n_b,
        }
        for item, lp_a, lp_b, diff, n_a, n_b in zip(
            items, a.logprobs, b.logprobs, diffs, a.n_tokens, b.n_tokens, strict=True
        )
        if diff > tolerance or n_a != n_b
    ]
    return ParityReport(
        a=a_name,
        b=b_name,
        n=len(items),
        greedy_identical=1.0 - len(greedy_mismatches) / len(items),
        max_abs_logprob_diff=max(diffs),
        mean_abs_logprob_diff=sum(diffs) / len(diffs),
        tolerance=tolerance,
        max_new_tokens=max_new_tokens,
        greedy_mismatches=greedy_mismatches,
        logprob_mismatches=logprob_mismatches,
        same_tokens=a.n_tokens == b.n_tokens,
    )


def run_parity(
    backend_a: Backend,
    backend_b: Backend,
    *,
    limit: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> ParityReport:
    """Both backends over the first `limit` authored items, one backend at a time."""
    items = PARITY_ITEMS[:limit] if limit is not None else PARITY_ITEMS
    answers_a = answer_with(backend_a, items, max_new_tokens)
    answers_b = answer_with(backend_b, items, max_new_tokens)
    return compare_answers(
        backend_a.display_name,
        backend_b.display_name,
        items,
        answers_a,
        answers_b,
        tolerance=tolerance,
        max_new_tokens=max_new_tokens,
    )
