"""What every reward source is: a float per rollout, and pairwise preferences from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rollout:
    """One sampled completion of one prompt, as a reward sees it."""

    prompt: tuple[dict[str, str], ...]
    completion: str
    row: Mapping[str, Any] = field(default_factory=dict)


class Rewarder:
    """A source of rewards. Subclasses give `rewards`; pairwise judges also `preferences`."""

    name: str = "reward"

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        raise NotImplementedError

    def preferences(self, first: Sequence[Rollout], second: Sequence[Rollout]) -> list[float]:
        """P(first preferred) per pair: 1, 0 or 0.5 on a tie, from the two rewards."""
        if len(first) != len(second):
            raise ValueError("preferences need as many first as second rollouts")
        scores = self.rewards([*first, *second])
        a, b = scores[: len(first)], scores[len(first) :]
        return [1.0 if x > y else 0.0 if x < y else 0.5 for x, y in zip(a, b, strict=True)]

    def identity(self) -> dict[str, Any]:
        """Everything that decides the rewards (a judge's identity, a label mapping, ...)."""
        return {"reward": self.name}

    def stats(self) -> dict[str, int]:
        """Counters worth logging beside the rewards (a judge's calls and unparseable
        verdicts); empty for sources that cannot fail."""
        return {}

    def close(self) -> None:
        """Free what the source holds (a loaded model, an HTTP client)."""
