"""`rm:DIR`: a reward model's scalar for the whole dialogue plus the completion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Rewarder, Rollout


class RewardModelRewarder(Rewarder):
    """The harness's reward-model backend, loaded once on the run's device in its dtype."""

    def __init__(self, spec: str, *, device: str, dtype: str) -> None:
        from evalharness.backends.reward import RewardModelBackend
        from evalharness.backends.spec import parse_model_spec

        self.name = spec
        self.backend = RewardModelBackend(parse_model_spec(spec, dtype=dtype, device=device))

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        from evalharness.engine.requests import Message, RewardRequest

        requests = [
            RewardRequest(
                tuple(Message(m["role"], m["content"]) for m in r.prompt)
                + (Message("assistant", r.completion),)
            )
            for r in rollouts
        ]
        return [result.reward for result in self.backend.reward(requests)]

    def identity(self) -> dict[str, Any]:
        return {"reward": self.name, "model": self.backend.identity}

    def close(self) -> None:
        self.backend.close()
