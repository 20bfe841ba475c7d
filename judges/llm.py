"""LLM judges over any backend: single-answer ratings and pairwise comparisons.

Two ways to read a verdict:
- `text`: the judge writes an explanation and a marker (`[[N]]`, `[[A]]`/`[[B]]`/`[[C]]`).
  Output without a marker is a failure, asked again (sampled, so the retry can differ) up to
  `retries` times, then recorded and counted.
- `probs`: the judge's own probabilities of the markers after an assistant prefix. A rating is
  the probability-weighted mean over 1-10 (as in G-Eval); a preference is P(A) / (P(A) + P(B))
  (AlpacaEval's weighted annotator). It cannot fail to parse, and gives a continuous signal.

Pairwise items are judged in every order the item lists, and the orders combine by the mode's
rule, the same for every task:
- `text` (`combine_text`, FastChat's MT-Bench rule): the orders' common winner; a verdict that
  flips with the order is a tie. preference = 2 (candidate), 1.5 (tie) or 1 (baseline).
- `probs` (`combine_probs`, AlpacaEval's continuous preference): preference = 1 + the mean over
  orders of P(candidate), so a flip is not a tie: 0.8 and 0.3 give 1.55, a weak win.
Averaging cancels an additive position bias and keeps the item's signal, where FastChat's rule
makes a tie of every item the order changes. In both modes `consistent` (`orders_agree`) says
whether every order favoured the same side (`side_of`); `order_gap` measures the position bias
of a probs verdict on the probability scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalharness.backends.base import Backend
from evalharness.engine.requests import (
    GenerateRequest,
    GenerateResult,
    Message,
    Request,
    Result,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
)
from evalharness.tasks.base import JudgeItem

from .base import Judge, side_of
from .parsing import parse_pairwise, parse_rating
from .prompts import FASTCHAT, render
from .templates import template_hash

RATINGS = tuple(range(1, 11))
RATING_PREFIX = "Rating: [["
VERDICT_PREFIX = "[["
MODES = ("probs", "text")
#: What a judge built without settings uses (`build_judge`'s defaults, best-of-N's judge scorer).
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_RETRIES = 2
#: Retries sample at this temperature (seeded by the attempt) so they can answer differently.
RETRY_TEMPERATURE = 0.7
PREFERENCE = {"candidate": 2.0, "baseline": 1.0, "tie": 1.5}
#: The 3-class refusal protocol's class numbers (as in XSTest's classifier prompt).
REFUSAL_CLASSES = {"1": "full_compliance", "2": "full_refusal", "3": "partial_refusal"}
REFUSAL_PATTERN = re.compile(r"\[\[([123])\]\]")
#: The two answers' markers a pairwise probs verdict scores.
LETTERS = ("A", "B")
#: The single-prompt protocols: the prefix a probs verdict scores after, and its options.
SCORED: Mapping[str, tuple[str, Sequence[object]]] = {
    "rating": (RATING_PREFIX, RATINGS),
    "refusal": (VERDICT_PREFIX, tuple(REFUSAL_CLASSES)),
}


def auto_mode(backend_kind: str) -> str:
    """The `auto` judge mode for a judge model of this backend kind (`ModelSpec.backend`): an
    `openai:` judge reads its verdict from text, a local one from its probabilities."""
    return "text" if backend_kind == "openai" else "probs"


class LLMJudge(Judge):
    protocols: ClassVar[tuple[str, ...]] = ("rating", "pairwise", "refusal")

    def __init__(
        self,
        backend: Backend,
        mode: str,
        name: str,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self.backend = backend
        self.mode = mode
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.retries = retries if mode == "text" else 0
        self._template_hashes: dict[str, str] = {}

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": "llm",
            "mode": self.mode,
            "backend": self.backend.identity,  # type: ignore[union-attr]
            "max_new_tokens": self.max_new_tokens if self.mode == "text" else None,
        }

    def item_key_fields(self, item: JudgeItem) -> dict[str, Any]:
        """Folded into the verdict cache key: the exact prompt text the item was judged with."""
        if item.template == FASTCHAT:  # the prompt record itself is in the item's fields
            return {}
        if item.template not in self._template_hashes:
            self._template_hashes[item.template] = template_hash(item.template)
        return {"template_sha256": self._template_hashes[item.template]}

    def calls_per_item(self, protocol: str, n_orders: int) -> int:
        if protocol in SCORED:
            return len(SCORED[protocol][1]) if self.mode == "probs" else 1
        return max(1, n_orders) * (len(LETTERS) if self.mode == "probs" else 1)

    # -- requests ------------------------------------------------------------------------
    def _sampling(self, attempt: int) -> SamplingParams:
        if attempt == 0:
            return SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens)
        return SamplingParams(
            temperature=RETRY_TEMPERATURE, max_new_tokens=self.max_new_tokens, seed=attempt
        )

    def _ask(
        self, messages: Sequence[Message], attempt: int, context: str, options: Sequence[object]
    ) -> list[Request]:
        """One prompt's requests: in probs mode the score of each option's marker after the
        assistant prefix `context`; in text mode one generation (sampled on a retry)."""
        if self.mode == "probs":
            return [
                ScoreRequest(messages=messages, context=context, continuation=f"{o}]]")
                for o in options
            ]
        return [GenerateRequest(messages=messages, sampling=self._sampling(attempt))]

    def requests_for(self, item: JudgeItem, attempt: int = 0) -> list[Request]:
        self.check_protocol(item.protocol)
        if item.protocol in SCORED:
            messages = render(item.template, item.fields, self.mode)
            return self._ask(messages, attempt, *SCORED[item.protocol])
        if identical_answers(item):
            return []  # a tie by definition (AlpacaEval does not ask its judge either)
        requests: list[Request] = []
        for candidate_first in item.orders or (True,):
            messages = render(item.template, item.fields, self.mode, candidate_first)
            requests += self._ask(messages, attempt, VERDICT_PREFIX, LETTERS)
        return requests

    # -- verdicts ------------------------------------------------------------------------
    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        if item.protocol == "rating":
            return self._rating_verdict(results)
        if item.protocol == "refusal":
            return self._refusal_verdict(results)
        return self._pairwise_verdict(item, results)

    def _refusal_verdict(self, results: Sequence[Result]) -> dict[str, Any]:
        """One of the three classes; from probabilities, the most likely one."""
        if self.mode == "probs":
            logprobs = [r.logprob for r in results if isinstance(r, ScoreResult)]
            probabilities = {
                label: round(p, 6)
                for label, p in zip(REFUSAL_CLASSES.values(), renormalise(logprobs), strict=True)
            }
            label = max(probabilities, key=probabilities.__getitem__)
            return {"label": label, "failure": False, "probabilities": probabilities}
        (result,) = results
        assert isinstance(result, GenerateResult)
        match = REFUSAL_PATTERN.search(result.text)
        if match is None:
            return {
                "label": None,
                "failure": True,
                "retryable": True,
                "error": "no [[1]], [[2]] or [[3]] found",
                "raw": result.text,
            }
        return {"label": REFUSAL_CLASSES[match.group(1)], "failure": False, "raw": result.text}

    def _rating_verdict(self, results: Sequence[Result]) -> dict[str, Any]:
        if self.mode == "probs":
            return rating_from_logprobs([r.logprob for r in results if isinstance(r, ScoreResult)])
        (result,) = results
        assert isinstance(result, GenerateResult)
        rating = parse_rating(result.text)
        if rating is None:
            return {
                "rating": -1.0,
                "failure": True,
                "retryable": True,
                "error": "no [[rating]] found",
                "raw": result.text,
            }
        return {"rating": rating, "failure": False, "raw": result.text}

    def _pairwise_verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        if identical_answers(item):
            return {"preference": 1.5, "winner": "tie", "consistent": None, "failure": False}
        orders = item.orders or (True,)
        if self.mode == "probs":
            pairs = zip(results[0::2], results[1::2], orders, strict=True)
            return combine_probs([_probs_pass(a, b, first) for a, b, first in pairs])
        passes = [_text_pass(r, first) for r, first in zip(results, orders, strict=True)]
        if any(x["winner"] is None for x in passes):
            return {
                "preference": None,
                "winner": None,
                "failure": True,
                "retryable": True,
                "error": "no [[A]], [[B]] or [[C]] found",
                "passes": passes,
            }
        return combine_text(passes)


def identical_answers(item: JudgeItem) -> bool:
    """The candidate's answers are the baseline's, word for word, in every judged turn."""
    fields = item.fields
    turns = (1, 2) if fields.get("turn") == 2 else (1,)
    return all(fields.get(f"answer_{t}") == fields.get(f"baseline_{t}") for t in turns)


def _letter_to_side(letter: str, candidate_first: bool) -> str:
    if letter == "tie":
        return "tie"
    candidate_letter = "A" if candidate_first else "B"
    return "candidate" if letter == candidate_letter else "baseline"


def _probs_pass(a: Result, b: Result, candidate_first: bool) -> dict[str, Any]:
    """One order read from P("A]]") and P("B]]"): P(candidate) = P(A) / (P(A) + P(B)), or
    P(B) / (P(A) + P(B)) when the candidate was shown second."""
    assert isinstance(a, ScoreResult) and isinstance(b, ScoreResult)
    p_a = 1.0 / (1.0 + math.exp(b.logprob - a.logprob))
    p_candidate = p_a if candidate_first else 1.0 - p_a
    return {
        "candidate_first": candidate_first,
        "p_candidate": round(p_candidate, 6),
        "winner": side_of(p_candidate),
    }


def _text_pass(result: Result, candidate_first: bool) -> dict[str, Any]:
    """One order read from the judge's marker; `winner` is None when there is none."""
    assert isinstance(result, GenerateResult)
    letter = parse_pairwise(result.text)
    winner = None if letter is None else _letter_to_side(letter, candidate_first)
    return {"candidate_first": candidate_first, "winner": winner, "raw": result.text}


def combine_probs(passes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """probs mode: preference = 1 + mean over the orders of P(candidate is better).

    AlpacaEval's weighted annotators read P(candidate) the same way in one random order; the
    mean over both orders is that preference's expectation over the coin, without its noise,
    so win rates stay comparable with AlpacaEval's. A flip is therefore not a tie: 0.8 and 0.3
    give 1.55, a weak win, with `consistent` False.
    """
    p = sum(x["p_candidate"] for x in passes) / len(passes)
    return _combine(passes, preference=1.0 + p)


def combine_text(passes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """text mode, FastChat's MT-Bench rule: the winner every order agrees on, else a tie.

    preference = 2 (candidate), 1.5 (tie) or 1 (baseline); a verdict that flips with the order
    is a tie, as FastChat counts its "inconsistent" pairs.
    """
    winners = {x["winner"] for x in passes}
    winner = winners.pop() if len(winners) == 1 else "tie"
    return _combine(passes, preference=PREFERENCE[winner])


def orders_agree(passes: Sequence[Mapping[str, Any]]) -> bool | None:
    """One item's swap consistency, the same test in both modes: every order favours the same
    side. A probs order favours the side its P(candidate) is on (> 0.5, < 0.5, exactly 0.5 a
    tie), so `swap_consistency` means the same thing whichever mode judged. None for one order.
    """
    if len(passes) < 2:
        return None
    return len({x["winner"] for x in passes}) == 1


def order_gap(verdict: Mapping[str, Any]) -> float | None:
    """|P(candidate) shown first - P(candidate) shown second| of a probs verdict in both orders.

    The judge's position bias on the preference scale: 0 when the order changes nothing, 1 when
    the order alone decides. Read from the stored passes, so verdicts cached before this measure
    existed have it too; None for text verdicts, one order, or identical answers (no call).
    """
    probs = {
        x["candidate_first"]: x["p_candidate"]
        for x in verdict.get("passes") or ()
        if x.get("p_candidate") is not None
    }
    if set(probs) != {True, False}:
        return None
    return round(abs(probs[True] - probs[False]), 6)


def _combine(passes: Sequence[dict[str, Any]], preference: float) -> dict[str, Any]:
    """The item's verdict from its passes and their combined preference (1 to 2)."""
    return {
        "preference": round(preference, 6),
        "winner": side_of(preference - 1.0),
        "consistent": orders_agree(passes),
        "failure": False,
        "passes": list(passes),
    }


def renormalise(logprobs: Sequence[float]) -> list[float]:
    """Probabilities of the listed options only (they sum to 1), computed stably."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def rating_from_logprobs(logprobs: Sequence[float]) -> dict[str, Any]:
    """Expected rating under the judge's renormalised distribution over 1..10."""
    probabilities = renormalise(logprobs)
    expected = sum(r * p for r, p in zip(RATINGS, probabilities, strict=True))
    best = RATINGS[max(range(len(RATINGS)), key=probabilities.__getitem__)]
    return {
        "rating": round(expected, 4),
        "failure": False,
        "argmax_rating": best,
        "distribution": {str(r): round(p, 6) for r, p in zip(RATINGS, probabilities, strict=True)},
        "mass_on_ratings": round(sum(math.exp(lp) for lp in logprobs), 6),
    }
