"""`judge:MODEL`: an LLM judge's single-answer rating, 1 to 10, as a reward in [0, 1].

The judge rates each completion with the MT-Bench single-answer prompt (the one `bon:` best-of-N
judges with, `backends.best_of_n.rating_fields`: the dialogue shown as MT-Bench shows it). A
local judge (`hf:`) reads the rating from its probabilities (the expected rating, never a parse
failure), an `openai:` judge from its text (`Rating: [[N]]`); `mode` overrides, as
`--judge-mode` does. The reward is `(rating - 1) / 9`: 0 for the worst answer, 1 for the best,
on the scale of the verifiable checks, so a weighted sum of both reads naturally.

A rating that does not parse after the judge's retries is worth `failure_reward`, by default
0.0, the lowest reward: an answer the judge could not grade must not outrank one it could (an
unparseable judge reply is most often a degenerate answer that confused it). Each one is counted
(`stats()["failures"]`) and logged; none stops the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Rewarder, Rollout
from .judged import CachedJudge, build_llm_judge, prompt_messages

LOWEST, HIGHEST = 1.0, 10.0


def rating_reward(rating: float) -> float:
    """A 1-10 rating on the reward scale [0, 1]."""
    return (rating - LOWEST) / (HIGHEST - LOWEST)


class RatingRewarder(Rewarder):
    """One rating per distinct (prompt, completion), judged once per run."""

    def __init__(self, name: str, judge: Any, failure_reward: float = 0.0) -> None:
        from evalharness.backends.best_of_n import JUDGE_TEMPLATE
        from evalharness.judges.templates import template_hash

        self.name, self.failure_reward = name, float(failure_reward)
        self.calls = CachedJudge(name, judge)
        self.template_sha256 = template_hash(JUDGE_TEMPLATE)

    @classmethod
    def from_spec(
        cls, spec: str, *, device: str, failure_reward: float = 0.0, **options: Any
    ) -> RatingRewarder:
        judge_spec = spec.partition(":")[2]
        judge = build_llm_judge(spec, judge_spec, "rating", device=device, **options)
        return cls(spec, judge, failure_reward)

    def _item(self, rollout: Rollout) -> Any:
        from evalharness.backends.best_of_n import JUDGE_TEMPLATE, rating_fields
        from evalharness.tasks.base import JudgeItem

        fields = rating_fields(prompt_messages(rollout), rollout.completion)
        return JudgeItem("rating", JUDGE_TEMPLATE, fields)

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        verdicts = self.calls.verdicts([self._item(r) for r in rollouts])
        return [
            self.failure_reward if v.get("failure") else rating_reward(float(v["rating"]))
            for v in verdicts
        ]

    def stats(self) -> dict[str, int]:
        return self.calls.stats()

    def identity(self) -> dict[str, Any]:
        return {
            "reward": self.name,
            "judge": self.calls.identity(),
            "template_sha256": self.template_sha256,
            "scale": "(rating - 1) / 9",
            "failure_reward": self.failure_reward,
        }

    def close(self) -> None:
        self.calls.close()
