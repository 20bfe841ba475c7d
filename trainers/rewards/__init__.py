"""Rewards for the online methods: one interface over every judge the harness has.

An online loop hands a `Rewarder` the rollouts it sampled (prompt messages, completion text, the
data row) and gets a float per rollout (`rewards`), or, for the online DPO family, the
probability that each first rollout beats its second (`preferences`). Scalar sources compare
their rewards; a pairwise judge answers `preferences` itself. `build_rewarder` reads the spec
(`trainers.rewards.spec`) and loads what it names.
"""

from __future__ import annotations

from typing import Any

from evalharness.errors import InputError

from .base import Rewarder, Rollout
from .spec import RewardTerm, check_reward, reward_terms

__all__ = [
    "Rewarder",
    "Rollout",
    "RewardTerm",
    "build_rewarder",
    "check_reward",
    "reward_terms",
]


def build_rewarder(
    spec: str | list[dict[str, Any]], *, device: str = "cpu", dtype: str = "auto"
) -> Rewarder:
    """The rewarder a `reward` setting names; a weighted list becomes one summed rewarder."""
    terms = reward_terms(spec)
    if len(terms) == 1 and terms[0].weight == 1.0:
        return _single(terms[0].spec, device=device, dtype=dtype)
    from .combined import WeightedRewarder

    return WeightedRewarder(
        [(_single(t.spec, device=device, dtype=dtype), t.weight) for t in terms]
    )


def _single(spec: str, *, device: str, dtype: str) -> Rewarder:
    kind, _, value = spec.partition(":")
    if kind == "rm":
        from .model import RewardModelRewarder

        return RewardModelRewarder(spec, device=device, dtype=dtype)
    if kind == "python":
        from .functions import FunctionRewarder

        return FunctionRewarder.from_spec(value)
    raise InputError(
        f"unknown reward {spec!r}: use rm:DIR, python:MODULE:FUNCTION or a list of "
        "{reward: SPEC, weight: W}"
    )
