"""What a person reads per sample in the HTML report: the view and its verdict lines.

Kept apart from the task contract (`base.py`) because only reports read it: a task's `present`
builds a `SampleView` from stored JSON alone, and `describe_verdict` turns any judge's stored
verdict into the same four fields, so every task's report reads alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SampleView:
    """What a person reads for one sample in the HTML report.

    `prompt` lists the user turns; `responses` the model's text per slot; `verdicts` one entry
    per judged slot: {slot, verdict (what the judge decided, as text), score (a number or None),
    rationale (the judge's own words, or None)}; `tags` are the fields a reader filters on.
    """

    prompt: list[str]
    responses: dict[str, str]
    reference: str | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    score: float | None = None
    tags: dict[str, str] = field(default_factory=dict)


def describe_verdict(slot: str, verdict: Mapping[str, Any]) -> dict[str, Any]:
    """{slot, verdict, score, rationale} from any judge's stored verdict (see `SampleView`)."""
    if verdict.get("failure"):
        decided = "failed: " + str(verdict.get("error") or "no parseable verdict")
    elif "rating" in verdict:
        decided = f"rating {verdict['rating']}"
    elif "winner" in verdict:
        decided = f"winner: {verdict['winner']}"
    elif "label" in verdict:
        decided = str(verdict["label"])
    elif "reward" in verdict:
        decided = f"reward {verdict['reward']}"
    else:
        decided = ", ".join(f"{k}={v}" for k, v in sorted(verdict.items()) if k != "attempts")
    score = next(
        (
            float(verdict[key])
            for key in ("rating", "preference", "reward", "score")
            if isinstance(verdict.get(key), (int, float)) and not isinstance(verdict[key], bool)
        ),
        None,
    )
    rationale = verdict.get("raw")
    if rationale is None and verdict.get("passes"):
        texts = [
            f"{'candidate first' if p.get('candidate_first') else 'baseline first'}: "
            + str(p.get("raw") or f"P(candidate)={p.get('p_candidate')}")
            for p in verdict["passes"]
        ]
        rationale = "\n\n".join(texts)
    if rationale is None and verdict.get("distribution"):
        top = sorted(verdict["distribution"].items(), key=lambda kv: -kv[1])[:3]
        rationale = "judge token probabilities: " + ", ".join(f"{k}: {v:.3f}" for k, v in top)
    if rationale is None and verdict.get("matched"):
        rationale = f"matched rule: {verdict['matched']}"
    return {"slot": slot, "verdict": decided, "score": score, "rationale": rationale}
