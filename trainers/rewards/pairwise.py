"""`pairwise:MODEL`: an LLM judge comparing two completions of the same prompt.

Each pair is judged as the harness judges pairwise tasks: the `pairwise` prompt template, both
orders (the first completion shown as A, then as B), combined by the judge mode's rule
(`judges.llm`): in `text` mode FastChat's (the winner both orders agree on, else a tie), in
`probs` mode the mean over orders of P(first is better). So a judge that always picks A gives
0.5, not a win, and position bias cancels. Two identical completions are a tie without a call.
A pair judged once is not judged again in the run, in either order: the pair is stored with its
completions in a fixed order and the preference flipped for the other (with both orders
judged, the swapped pair's verdict is the same two calls).

`preferences(first, second)` is the judge's answer itself: P(first preferred) in [0, 1]; a
verdict that does not parse after the judge's retries counts as a tie (0.5), counted and logged.

`rewards(rollouts)` gives each rollout its **win rate within its group**: the rollouts sharing
its prompt, each compared with every other once (a round robin), reward = the mean of its
preferences against the others (a tie counts half). Why a win rate: a pairwise judge only ranks,
and the win rate is that ranking on a fixed [0, 1] scale whatever the group size (the group
mean is always 0.5), which is exactly what group-relative methods (GRPO, RLOO) normalise; a
comparison against a fixed baseline instead would need a reference answer in every row and
saturate once the policy passes it. It costs G(G - 1)/2 comparisons (two calls each) per group
of G. A rollout alone with its prompt has no one to beat and gets 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalharness.engine.requests import canonical_json

from .base import Rewarder, Rollout
from .judged import CachedJudge, build_llm_judge, prompt_messages

TEMPLATE = "pairwise"
TIE = 0.5


class PairwiseRewarder(Rewarder):
    """Preferences from a pairwise LLM judge, and win rates within groups from them."""

    def __init__(self, name: str, judge: Any) -> None:
        from evalharness.judges.templates import template_hash

        self.name = name
        self.calls = CachedJudge(name, judge)
        self.template_sha256 = template_hash(TEMPLATE)

    @classmethod
    def from_spec(cls, spec: str, *, device: str, **options: Any) -> PairwiseRewarder:
        judge_spec = spec.partition(":")[2]
        return cls(spec, build_llm_judge(spec, judge_spec, "pairwise", device=device, **options))

    def preferences(self, first: Sequence[Rollout], second: Sequence[Rollout]) -> list[float]:
        if len(first) != len(second):
            raise ValueError("preferences need as many first as second rollouts")
        for a, b in zip(first, second, strict=True):
            if a.prompt != b.prompt:
                raise ValueError(f"{self.name} compares completions of one prompt, not two")
        # The pair in a fixed order (by completion text), so (a, b) and (b, a) share a verdict.
        flipped = [a.completion > b.completion for a, b in zip(first, second, strict=True)]
        items = [
            _item(b, a) if flip else _item(a, b)
            for a, b, flip in zip(first, second, flipped, strict=True)
        ]
        preferences = []
        for verdict, flip in zip(self.calls.verdicts(items), flipped, strict=True):
            p = TIE if verdict.get("failure") else float(verdict["preference"]) - 1.0
            preferences.append(1.0 - p if flip else p)
        return preferences

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        groups: dict[str, list[int]] = {}
        for index, rollout in enumerate(rollouts):
            groups.setdefault(canonical_json(list(rollout.prompt)), []).append(index)
        pairs = [
            (members[i], members[j])
            for members in groups.values()
            for i in range(len(members))
            for j in range(i + 1, len(members))
        ]
        wins = [0.0] * len(rollouts)
        opponents = [0] * len(rollouts)
        if pairs:
            first = [rollouts[i] for i, _ in pairs]
            second = [rollouts[j] for _, j in pairs]
            for (i, j), p in zip(pairs, self.preferences(first, second), strict=True):
                wins[i] += p
                wins[j] += 1.0 - p
                opponents[i] += 1
                opponents[j] += 1
        return [w / n if n else TIE for w, n in zip(wins, opponents, strict=True)]

    def stats(self) -> dict[str, int]:
        return self.calls.stats()

    def identity(self) -> dict[str, Any]:
        return {
            "reward": self.name,
            "judge": self.calls.identity(),
            "template_sha256": self.template_sha256,
            "orders": "both",
            "rewards": "win rate within the prompt's group",
        }

    def close(self) -> None:
        self.calls.close()


def _item(candidate: Rollout, baseline: Rollout) -> Any:
    """The pairwise judge item: `candidate` against `baseline`, judged in both orders."""
    from evalharness.backends.best_of_n import rating_fields
    from evalharness.tasks.base import JudgeItem

    messages = prompt_messages(candidate)
    fields = rating_fields(messages, candidate.completion)
    if fields["turn"] == 2:
        fields.update(baseline_1=fields["answer_1"], baseline_2=baseline.completion)
    else:
        fields.update(baseline_1=baseline.completion, baseline_2=None)
    return JudgeItem("pairwise", TEMPLATE, fields, (True, False))
