"""Single-answer grading on a 1-10 scale (MT-Bench protocol).

Two ways to read a rating:
- `text`: the judge writes an explanation and `[[N]]`; unparseable output is a recorded failure
  (rating -1), excluded from means and counted.
- `probs`: the judge's own probabilities over the ten ratings after "Rating: [[" give a
  probability-weighted rating (as in G-Eval). It cannot fail to parse, and lets a small local
  model give a usable, continuous signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalharness.backends.base import Backend
from evalharness.requests import (
    GenerateRequest,
    GenerateResult,
    Request,
    Result,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
)
from evalharness.tasks.base import JudgeItem

from .base import Judge
from .parsing import parse_rating
from .templates import render_messages, template_hash

RATINGS = tuple(range(1, 11))
RATING_PREFIX = "Rating: [["
MODES = ("probs", "text")


class RatingJudge(Judge):
    def __init__(self, backend: Backend, mode: str, name: str, max_new_tokens: int = 512) -> None:
        self.backend = backend
        self.mode = mode
        self.name = name
        self.max_new_tokens = max_new_tokens
        self._template_hashes: dict[str, str] = {}

    def _hash(self, template: str) -> str:
        if template not in self._template_hashes:
            self._template_hashes[template] = template_hash(template)
        return self._template_hashes[template]

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": "rating",
            "mode": self.mode,
            "backend": self.backend.identity,
            "max_new_tokens": self.max_new_tokens if self.mode == "text" else None,
        }

    def item_key_fields(self, item: JudgeItem) -> dict[str, Any]:
        """Folded into the verdict cache key: the exact template text the item was judged with."""
        return {"template_sha256": self._hash(item.template)}

    def requests_for(self, item: JudgeItem) -> list[Request]:
        messages = render_messages(item.template, {**item.fields, "mode": self.mode})
        if self.mode == "probs":
            return [
                ScoreRequest(messages=messages, context=RATING_PREFIX, continuation=f"{r}]]")
                for r in RATINGS
            ]
        sampling = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens)
        return [GenerateRequest(messages=messages, sampling=sampling)]

    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        if self.mode == "probs":
            return rating_from_logprobs([r.logprob for r in results if isinstance(r, ScoreResult)])
        (result,) = results
        assert isinstance(result, GenerateResult)
        rating = parse_rating(result.text)
        if rating is None:
            return {
                "rating": -1.0,
                "failure": True,
                "error": "no [[rating]] found",
                "raw": result.text,
            }
        return {"rating": rating, "failure": False, "raw": result.text}


def rating_from_logprobs(logprobs: Sequence[float]) -> dict[str, Any]:
    """Expected rating under the judge's renormalised distribution over 1..10."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    probabilities = [w / total for w in weights]
    expected = sum(r * p for r, p in zip(RATINGS, probabilities, strict=True))
    best = RATINGS[max(range(len(RATINGS)), key=probabilities.__getitem__)]
    return {
        "rating": round(expected, 4),
        "failure": False,
        "argmax_rating": best,
        "distribution": {str(r): round(p, 6) for r, p in zip(RATINGS, probabilities, strict=True)},
        "mass_on_ratings": round(math.exp(top) * total, 6),
    }
