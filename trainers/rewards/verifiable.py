"""`exact` / `exact:FIELD`: 1.0 when the completion's answer equals the row's, else 0.0.

The reference is the row's FIELD (default `answer`); after GSM8K's `####` marker when it has
one (`"... so 72 #### 72"` is `72`). How the two are compared:

- a **number** reference (after dropping `$`, thousands commas and a final period): the **last
  number** in the completion (GSM8K's rule: a worked answer ends with its result), compared as
  decimals, so `1,000` = `1000` = `1000.0`; a completion with no number scores 0;
- any other reference: the **stripped text**, whitespace runs made one space, case-folded, a
  final period dropped, equal to the reference normalised the same way.

With `pattern: REGEX` in the reward entry, the answer is instead what the pattern extracts from
the completion (its first group, else the whole match; no match scores 0), as a task.yaml's
`regex` scoring does, and then compared by the same rule: e.g. `pattern: 'Answer: (.*)'`.

Regex matches with no reference (a format check) are `regex:PATTERN` (`trainers.rewards.rules`);
any other check is a Python function, `python:MODULE:FUNCTION`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from evalharness.errors import InputError

from .base import Rewarder, Rollout

DEFAULT_FIELD = "answer"
GSM8K_MARKER = "####"
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def reference_text(value: Any) -> str:
    """The row's reference answer as text, after GSM8K's `####` marker when present."""
    text = str(value)
    if GSM8K_MARKER in text:
        text = text.rsplit(GSM8K_MARKER, 1)[1]
    return text.strip()


def as_number(text: str) -> Decimal | None:
    """`text` as a decimal when it is one number (`$`, commas and a final period allowed)."""
    cleaned = text.strip().removeprefix("$").removesuffix(".").strip()
    if not NUMBER.fullmatch(cleaned):
        return None
    try:
        return Decimal(cleaned.replace(",", ""))
    except InvalidOperation:
        return None


def last_number(text: str) -> Decimal | None:
    """The last number written in `text`, if any."""
    found = NUMBER.findall(text)
    return as_number(found[-1]) if found else None


def normalised_text(text: str) -> str:
    """Stripped, single-spaced, case-folded, without a final period."""
    return " ".join(text.split()).casefold().removesuffix(".").strip()


def answers_match(answer: str, reference: str) -> bool:
    """The comparison rule of the module docstring (`reference` already extracted)."""
    expected = as_number(reference)
    if expected is not None:
        found = last_number(answer)
        return found is not None and found == expected
    return normalised_text(answer) == normalised_text(reference)


class ExactAnswerRewarder(Rewarder):
    """1.0 for a completion whose answer matches the row's FIELD, else 0.0."""

    def __init__(self, field: str = DEFAULT_FIELD, pattern: str | None = None) -> None:
        self.field, self.pattern = field, pattern
        self.name = f"exact:{field}"
        self._compiled = None if pattern is None else re.compile(pattern)

    @classmethod
    def from_spec(cls, spec: str, pattern: str | None = None) -> ExactAnswerRewarder:
        return cls(spec.partition(":")[2] or DEFAULT_FIELD, pattern)

    def answer(self, completion: str) -> str | None:
        """What is compared: the completion, or what `pattern` extracts from it."""
        if self._compiled is None:
            return completion
        match = self._compiled.search(completion)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        values = []
        for rollout in rollouts:
            if rollout.row.get(self.field) is None:
                raise InputError(
                    f"reward {self.name}: the prompt row has no field {self.field!r} "
                    f"(its fields: {', '.join(sorted(rollout.row)) or 'none'})"
                )
            answer = self.answer(rollout.completion)
            reference = reference_text(rollout.row[self.field])
            values.append(float(answer is not None and answers_match(answer, reference)))
        return values

    def identity(self) -> dict[str, Any]:
        return {
            "reward": self.name,
            "pattern": self.pattern,
            "compare": "last number if the reference is a number, else normalised text",
        }
