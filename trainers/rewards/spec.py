"""The `reward` setting of an online run, checked when the config is read (no model loads).

A reward is one spec string or a weighted list of them, `[{reward: SPEC, weight: W}, ...]`,
whose rewards are summed with those weights: e.g. a verifiable answer check plus a small
reward-model term for style. An entry may also carry its source's options beside `reward` and
`weight` (a judge's `base_url`, a rule's `labels`, ...): a spec string alone has nowhere to put
them, and the config file is where the other judge settings of the harness live too.

Spec kinds (README's "Rewards for online methods" has an example of each):
- `rm:DIR` a reward model; `python:MODULE:FUNCTION` / `python:FILE.py:FUNCTION` a function;
- `judge:MODEL` an LLM judge's 1-10 rating, `pairwise:MODEL` its pairwise preference (MODEL is
  any judge model spec: `hf:DIR`, `openai:NAME`, an alias);
- `rules:NAME_OR_YAML`, `refusal-rules`, `regex:PATTERN`, `refusal-regex:PATTERN` rule judges;
- `exact` / `exact:FIELD` the verifiable answer check against a row field (default `answer`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evalharness.errors import InputError

#: Options an LLM judge reward takes (those of `judges.factory.build_judge`, as the config
#: names them), and what each must be.
JUDGE_OPTIONS: dict[str, tuple[type, ...]] = {
    "mode": (str,),
    "base_url": (str,),
    "api_key_env": (str,),
    "max_new_tokens": (int,),
    "retries": (int,),
    "http_retries": (int,),
    "concurrency": (int,),
    "timeout_s": (int, float),
}
#: Spec kind -> the entry options it accepts (beside `reward` and `weight`).
KIND_OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "rm": {},
    "python": {},
    "judge": {**JUDGE_OPTIONS, "failure_reward": (int, float)},
    "pairwise": dict(JUDGE_OPTIONS),
    "rules": {"labels": (dict,)},
    "regex": {"labels": (dict,)},
    "refusal-regex": {"labels": (dict,)},
    "exact": {"pattern": (str,)},
}
#: Names that stand for a full spec, as `--judge` takes them.
SPEC_ALIASES = {"refusal-rules": "rules:refusal"}
SPEC_FORMS = (
    "rm:DIR, python:MODULE:FUNCTION, judge:MODEL, pairwise:MODEL, rules:NAME_OR_YAML, "
    "regex:PATTERN, refusal-regex:PATTERN, exact[:FIELD]"
)


@dataclass(frozen=True)
class RewardTerm:
    """One reward source, its weight in the sum and its options."""

    spec: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)


def spec_kind(spec: str) -> str:
    """The kind a spec names (`judge` for `judge:hf:DIR`, `exact` for bare `exact`)."""
    spec = SPEC_ALIASES.get(spec, spec)
    return spec.partition(":")[0]


def reward_terms(value: str | list[dict[str, Any]]) -> list[RewardTerm]:
    """The weighted terms a checked `reward` setting stands for (one term of weight 1 for a
    single spec)."""
    if isinstance(value, str):
        return [RewardTerm(value)]
    return [
        RewardTerm(
            str(entry["reward"]),
            float(entry.get("weight", 1.0)),
            {k: v for k, v in entry.items() if k not in ("reward", "weight")},
        )
        for entry in value
    ]


def check_reward(value: Any, label: str) -> str | list[dict[str, Any]]:
    """`value` as a reward setting, or a one-line error naming `label` (file:line: field)."""
    if isinstance(value, str) and value.strip():
        check_spec(value, {}, label)
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
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InputError(f"{where}: weight must be a number, not {weight!r}")
        options = {k: v for k, v in entry.items() if k not in ("reward", "weight")}
        check_spec(entry["reward"], options, where)
        checked.append({"reward": entry["reward"], "weight": float(weight), **options})
    return checked


def check_spec(spec: str, options: Mapping[str, Any], where: str) -> None:
    """A known kind, and options that kind takes, of the types it takes."""
    kind = spec_kind(spec)
    allowed = KIND_OPTIONS.get(kind)
    if allowed is None:
        raise InputError(f"{where}: unknown reward {spec!r}: use {SPEC_FORMS}")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(["reward", "weight", *allowed])
        raise InputError(f"{where} has unknown key(s) {', '.join(unknown)} ({known})")
    for name, value in options.items():
        types = allowed[name]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise InputError(f"{where}: {name} must be {wanted}, not {value!r}")
    if kind in ("judge", "pairwise") and spec.partition(":")[2] in ("", "self"):
        raise InputError(
            f"{where}: {spec!r} needs a judge model: {kind}:hf:DIR, {kind}:openai:MODEL or an alias"
        )
    labels = options.get("labels", {})
    for label, reward in labels.items():
        if isinstance(reward, bool) or not isinstance(reward, int | float):
            raise InputError(f"{where}: labels.{label} must be a number, not {reward!r}")
    patterns = {"pattern": options.get("pattern")}
    if kind in ("regex", "refusal-regex"):
        patterns[kind] = spec.partition(":")[2]
    for name, pattern in patterns.items():
        if pattern is None:
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            message = f"{where}: {name} {pattern!r} is not a regular expression ({exc})"
            raise InputError(message) from None
