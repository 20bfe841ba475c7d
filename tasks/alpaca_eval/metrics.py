"""AlpacaEval's raw head-to-head win rate (the length-controlled one is in `length_control.py`).

`head_to_head` restates AlpacaEval's own rule (`alpaca_eval.metrics.get_winrate`) step for step,
with the same pandas reductions (`.mean()`, `.sem()`), so that preferences taken from AlpacaEval's
published annotations give back its published leaderboard numbers, quirks included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["head_to_head"]


def _as_float_series(preferences: Sequence[float | None]) -> pd.Series:
    """Float series with None as NaN; AlpacaEval builds the same from a float column."""
    return pd.Series(list(preferences), dtype="float64")


def head_to_head(preferences: Sequence[float | None]) -> dict[str, Any]:
    """Win rate of a candidate against the baseline, computed exactly as AlpacaEval does.

    A preference is AlpacaEval's encoding of a verdict: 1 the baseline wins, 2 the candidate
    wins, values in between are a weighted judge's expected outcome, and 1.5 (or the legacy 0) a
    draw. The rule, in AlpacaEval's order:

    1. `n_draws` counts values equal to 1.5 or 0 *before* anything is dropped;
    2. 0 becomes 1.5, then values that are NaN/None or outside [1, 2] are dropped as "not
       preferences"; `n_total` is what is left;
    3. with x = preference - 1: `win_rate` = 100 mean(x), `standard_error` = 100 std(x, ddof=1) /
       sqrt(n) (pandas `.sem()`), `n_wins` = #(x > 0.5), `n_wins_base` = #(x < 0.5);
    4. `discrete_win_rate` is AlpacaEval's zero-one rule: 1.5 becomes a draw, every other value
       is rounded to the nearest integer (half to even, as pandas rounds), then the same drop and
       mean are applied, so it equals 100 (#wins + #draws / 2) / n over the rounded values.

    The zero-one rule rounds *before* it drops, so an out-of-range 2.5 rounds to 2 and counts as
    a win, and values in (-0.5, 0.5] round to 0 and count as draws; AlpacaEval does the same and
    the judges here never produce such values, so the quirk is kept rather than "fixed" away from
    the published numbers.

    Returns plain Python numbers. Rates are None when nothing is left to average
    (`n_total` == 0), and `standard_error` is also None for a single item, where pandas gives NaN
    (NaN is not valid JSON).
    """
    raw = _as_float_series(preferences)
    n_draws = int(((raw == 1.5) | (raw == 0)).sum())

    continuous = raw.replace({0.0: 1.5})
    x = continuous[(continuous >= 1) & (continuous <= 2)] - 1
    n_total = len(x)

    discrete = raw.replace({1.5: 0.0}).round().replace({0.0: 1.5})
    x_discrete = discrete[(discrete >= 1) & (discrete <= 2)] - 1

    def _finite_or_none(value: float) -> float | None:
        return None if math.isnan(value) else float(value)

    return {
        "win_rate": _finite_or_none(x.mean() * 100) if n_total else None,
        "standard_error": _finite_or_none(x.sem() * 100) if n_total else None,
        "n_wins": int((x > 0.5).sum()),
        "n_wins_base": int((x < 0.5).sum()),
        "n_draws": n_draws,
        "n_total": n_total,
        "discrete_win_rate": (
            _finite_or_none(x_discrete.mean() * 100) if len(x_discrete) else None
        ),
    }
