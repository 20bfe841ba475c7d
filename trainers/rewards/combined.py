"""A weighted sum of reward sources (`reward: [{reward: SPEC, weight: W}, ...]`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Rewarder, Rollout


class WeightedRewarder(Rewarder):
    """`sum_k w_k * r_k(rollout)`; preferences compare the sums, as for any scalar source,
    except that one term of positive weight answers them itself (a pairwise judge's own
    P(first better), not a comparison of its win rates)."""

    def __init__(self, terms: Sequence[tuple[Rewarder, float]]) -> None:
        self.terms = list(terms)
        self.name = " + ".join(f"{w:g}*{r.name}" for r, w in self.terms)

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        total = [0.0] * len(rollouts)
        for rewarder, weight in self.terms:
            for i, value in enumerate(rewarder.rewards(rollouts)):
                total[i] += weight * value
        return total

    def preferences(self, first: Sequence[Rollout], second: Sequence[Rollout]) -> list[float]:
        if len(self.terms) == 1 and self.terms[0][1] > 0:
            return self.terms[0][0].preferences(first, second)
        return super().preferences(first, second)

    def identity(self) -> dict[str, Any]:
        return {"reward": [dict(r.identity(), weight=w) for r, w in self.terms]}

    def stats(self) -> dict[str, int]:
        """Each term's counters, under its name."""
        return {f"{r.name}/{k}": v for r, _ in self.terms for k, v in r.stats().items()}

    def close(self) -> None:
        for rewarder, _ in self.terms:
            rewarder.close()
