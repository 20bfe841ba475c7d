"""Reading verdicts out of judge text."""

from __future__ import annotations

import re

_DOUBLE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_SINGLE = re.compile(r"\[(\d+\.?\d*)\]")


def parse_rating(text: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """The first `[[N]]` (falling back to `[N]`) within [low, high]; None when nothing parses."""
    for pattern in (_DOUBLE, _SINGLE):
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            return value if low <= value <= high else None
    return None
