"""Reading verdicts out of judge text, exactly as FastChat's llm_judge does."""

from __future__ import annotations

import re

_RATING_DOUBLE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_SINGLE = re.compile(r"\[(\d+\.?\d*)\]")


def parse_rating(text: str) -> float | None:
    """`[[N]]` (a decimal is allowed), falling back to `[N]`; None when absent or outside 1-10."""
    match = _RATING_DOUBLE.search(text) or _RATING_SINGLE.search(text)
    if not match:
        return None
    value = float(match.group(1))
    return value if 1.0 <= value <= 10.0 else None


def parse_pairwise(text: str) -> str | None:
    """`[[A]]` -> "A", `[[B]]` -> "B", `[[C]]` -> "tie", in FastChat's order of checks."""
    for marker, verdict in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if marker in text:
            return verdict
    return None
