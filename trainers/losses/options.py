"""What each loss hyperparameter means, and how a user's value becomes the one the loss gets.

A loss declares its hyperparameters as keyword defaults; this module holds what is shared by
name across methods: the one-line meaning `evalharness methods` prints, the conversion (and
check) applied to a value from a config or the command line, and the settings that change how
the loop computes a method's inputs rather than the loss itself (`INPUT_OPTIONS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evalharness.errors import InputError


@dataclass(frozen=True)
class Option:
    """What a hyperparameter means (one line, for `evalharness methods`) and how a value given
    in a config or on the command line becomes the one the loss receives (None: as given)."""

    meaning: str
    convert: Callable[[Any], Any] | None = None


#: Hyperparameters documented by name, whichever methods take them (`describe` adds one).
OPTIONS: dict[str, Option] = {}

#: Settings that change how the loop computes a method's inputs, not the loss: they apply to
#: every pairwise method with a reference (TRL's DPOTrainer family), with these defaults.
INPUT_OPTIONS: dict[str, object] = {"ld_alpha": None}


def describe(name: str, meaning: str, convert: Callable[[Any], Any] | None = None) -> None:
    """Document hyperparameter `name`; `convert` checks and normalises a user's value."""
    OPTIONS[name] = Option(meaning, convert)


def check_range(name: str, value: float, low: float, high: float, *, closed_low: bool) -> None:
    """Reject a hyperparameter outside the interval where its loss is defined (not a silent NaN)."""
    above_low = value >= low if closed_low else value > low
    if not (above_low and value < high):
        bracket = "[" if closed_low else "("
        raise InputError(f"{name}={value} must lie in {bracket}{low}, {high})")


def convert_value(name: str, value: Any, default: Any) -> Any:
    """A user's `value` for hyperparameter `name` as the loss takes it.

    A documented option's own conversion wins; otherwise the default's type decides (booleans
    from "1"/"true"/"yes", numbers parsed, a None default read as a float), and anything else
    passes as given. Raises TypeError/ValueError for a value that is not a number.
    """
    option = OPTIONS.get(name)
    if option is not None and option.convert is not None:
        return option.convert(value)
    if isinstance(default, bool):
        return str(value).lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float) or default is None:
        return float(value)
    return value


describe(
    "ld_alpha",
    "LD-DPO: log-probs past a pair's shared length min(|y_w|, |y_l|) weighted by ld_alpha "
    "(policy and reference); null = off",
)
