"""Rewards for the online methods: one interface over every judge the harness has.

An online loop hands a `Rewarder` the rollouts it sampled (prompt messages, completion text, the
data row) and gets a float per rollout (`rewards`), or, for the online DPO family, the
probability that each first rollout beats its second (`preferences`). Scalar sources compare
their rewards; a pairwise judge answers `preferences` itself. `build_rewarder` reads the spec
(`trainers.rewards.spec`, which lists every kind) and loads what it names: each kind is its own
module here, imported only when a spec names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Rewarder, Rollout
from .spec import RewardTerm, check_reward, reward_terms, spec_kind

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
    terms = reward_terms(check_reward(spec, "reward"))
    if len(terms) == 1 and terms[0].weight == 1.0:
        return _single(terms[0], device=device, dtype=dtype)
    from .combined import WeightedRewarder

    return WeightedRewarder([(_single(t, device=device, dtype=dtype), t.weight) for t in terms])


def _single(term: RewardTerm, *, device: str, dtype: str) -> Rewarder:
    kind, spec, options = spec_kind(term.spec), term.spec, dict(term.options)
    if kind == "rm":
        from .model import RewardModelRewarder

        return RewardModelRewarder(spec, device=device, dtype=dtype)
    if kind == "python":
        from .functions import FunctionRewarder

        return FunctionRewarder.from_spec(spec.partition(":")[2])
    if kind == "judge":
        from .rating import RatingRewarder

        return RatingRewarder.from_spec(spec, device=device, **options)
    if kind == "pairwise":
        from .pairwise import PairwiseRewarder

        return PairwiseRewarder.from_spec(spec, device=device, **options)
    if kind == "exact":
        from .verifiable import ExactAnswerRewarder

        return ExactAnswerRewarder.from_spec(spec, **options)
    from .rules import RuleRewarder  # every other kind check_spec accepts is a rule judge

    return RuleRewarder.from_spec(spec, labels=_labels(options))


def _labels(options: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in options.get("labels", {}).items()}
