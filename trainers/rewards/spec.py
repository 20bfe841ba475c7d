"""The `reward` setting of an online run, checked when the config is read (no model loads).

A reward is one spec string (`rm:DIR`, `python:MODULE:FUNCTION`, ...) or a weighted list of
them, `[{reward: SPEC, weight: W}, ...]`, whose rewards are summed with those weights: e.g. a
verifiable answer check plus a small reward-model term for style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalharness.errors import InputError


@dataclass(frozen=True)
class RewardTerm:
    """One reward source and its weight in the sum."""

    spec: str
    weight: float = 1.0


def reward_terms(value: str | list[dict[str, Any]]) -> list[RewardTerm]:
    """The weighted terms a checked `reward` setting stands for (one term of weight 1 for a
    single spec)."""
    if isinstance(value, str):
        return [RewardTerm(value)]
    return [RewardTerm(str(entry["reward"]), float(entry.get("weight", 1.0))) for entry in value]


def check_reward(value: Any, label: str) -> str | list[dict[str, Any]]:
    """`value` as a reward setting, or a one-line error naming `label` (file:line: field)."""
    if isinstance(value, str) and value.strip():
        return value
    if not isinstance(value, list) or not value:
        raise InputError(
            f"{label} must be a reward spec (e.g. rm:DIR) or a list of "
            "{reward: SPEC, weight: NUMBER}"
        )
    checked = []
    for index, entry in enumerate(value):
        where = f"{label}, entry {index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("reward"), str):
            raise InputError(f"{where} must be a mapping with a reward spec: {{reward: SPEC}}")
        unknown = sorted(set(entry) - {"reward", "weight"})
        if unknown:
            raise InputError(f"{where} has unknown key(s) {', '.join(unknown)} (reward, weight)")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InputError(f"{where}: weight must be a number, not {weight!r}")
        checked.append({"reward": entry["reward"], "weight": float(weight)})
    return checked
