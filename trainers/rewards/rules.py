"""Rule judges as rewards: `rules:NAME_OR_YAML`, `refusal-rules`, `regex:PATTERN`,
`refusal-regex:PATTERN`.

The judge is `judges.rules.RuleJudge`, built from the same spec `--judge` takes, so a rule set
labels a completion in training exactly as it does in evaluation (the completion only, never
the prompt). Its label becomes a reward through a label -> reward mapping:

- refusal labels reward compliance: full_compliance 1.0, partial_refusal 0.5, full_refusal 0.0
  (`refusal-rules` / `rules:refusal` and `refusal-regex:` give these labels);
- `regex:PATTERN`: match 1.0, no_match 0.0 (a format or content check; the pattern is searched
  case-insensitively, `.` matching newlines, as the rule judge does);
- the entry's `labels: {LABEL: REWARD}` overrides or extends these (e.g. `full_refusal: 1.0` to
  train refusals, or the labels of your own rules file).

A label the rules can give but no mapping covers is an error when the reward is built, naming
the labels: a silent 0 would train towards or away from it without anyone deciding so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.errors import InputError

from .base import Rewarder, Rollout
from .spec import SPEC_ALIASES

DEFAULT_LABEL_REWARDS: dict[str, float] = {
    "full_compliance": 1.0,
    "partial_refusal": 0.5,
    "full_refusal": 0.0,
    "match": 1.0,
    "no_match": 0.0,
}


class RuleRewarder(Rewarder):
    """The reward of the label the rule judge gives each completion."""

    def __init__(self, name: str, judge: Any, labels: Mapping[str, float]) -> None:
        self.name, self.judge = name, judge
        given = judge.labels("classify")
        mapping = {**DEFAULT_LABEL_REWARDS, **labels}
        unmapped = [label for label in given if label not in mapping]
        if unmapped:
            example = ", ".join(f"{label}: 1.0" for label in unmapped)
            raise InputError(
                f"reward {name}: no reward for label(s) {', '.join(unmapped)}; add "
                f"labels: {{{example}}} to its reward entry"
            )
        #: Only the labels this judge can give: the identity names what decides the rewards.
        self.label_rewards = {label: float(mapping[label]) for label in given}

    @classmethod
    def from_spec(cls, spec: str, labels: Mapping[str, float]) -> RuleRewarder:
        from evalharness.judges.rules import RuleJudge

        spec = SPEC_ALIASES.get(spec, spec)
        try:
            judge = RuleJudge.from_spec(spec)
        except InputError as exc:
            raise InputError(f"reward {spec}: {exc}".replace("--judge ", "")) from None
        return cls(spec, judge, labels)

    def label(self, rollout: Rollout) -> str:
        return str(self.judge.classify(rollout.completion)["label"])

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        return [self.label_rewards[self.label(r)] for r in rollouts]

    def identity(self) -> dict[str, Any]:
        return {"reward": self.name, "judge": self.judge.identity, "labels": self.label_rewards}
