"""Reward-model judges: a sequence-classification model scores each answer.

A reward is not on MT-Bench's 1-10 scale, so a rating verdict holds the raw reward (means and
comparisons between runs judged by the same model stay meaningful). A pairwise preference is
the Bradley-Terry probability sigmoid(r_candidate - r_baseline): symmetric in the two answers,
so no order swapping is needed and no position bias exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from evalharness.engine.requests import Message, Request, Result, RewardRequest, RewardResult
from evalharness.tasks.base import JudgeItem

from .base import ModelJudge, side_of


def dialogue(fields: dict[str, Any], side: str) -> tuple[Message, ...]:
    """The conversation up to the judged turn, with `side` ("answer" or "baseline") answering."""
    turn = int(fields.get("turn") or 1)
    messages = [Message("user", fields["question_1"]), Message("assistant", fields[f"{side}_1"])]
    if turn == 2:
        messages += [
            Message("user", fields["question_2"]),
            Message("assistant", fields[f"{side}_2"]),
        ]
    return tuple(messages)


class RewardModelJudge(ModelJudge):
    protocols: ClassVar[tuple[str, ...]] = ("rating", "pairwise")
    kind: ClassVar[str] = "reward_model"

    def calls_per_item(self, protocol: str, n_orders: int) -> int:
        return 1 if protocol == "rating" else 2

    def requests_for(self, item: JudgeItem, attempt: int = 0) -> list[Request]:
        self.check_protocol(item.protocol)
        sides = ("answer",) if item.protocol == "rating" else ("answer", "baseline")
        return [RewardRequest(dialogue(item.fields, side)) for side in sides]

    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        rewards = [r.reward for r in results if isinstance(r, RewardResult)]
        if item.protocol == "rating":
            return {"rating": rewards[0], "reward": rewards[0], "failure": False}
        candidate, baseline = rewards
        p = 1.0 / (1.0 + math.exp(baseline - candidate))
        return {
            "preference": round(1.0 + p, 6),
            "winner": side_of(p),
            "consistent": None,
            "failure": False,
            "rewards": {"candidate": candidate, "baseline": baseline},
        }
