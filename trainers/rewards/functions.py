"""`python:MODULE:FUNCTION` (or `python:PATH.py:FUNCTION`): a reward written in Python.

The function takes `(prompt, completion, row)` — the chat messages, the completion text and the
data row — and returns a number: the way to reward a verifiable answer with a check of the
user's own (a unit test, a parser, a format rule) without a judge.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evalharness.errors import InputError

from .base import Rewarder, Rollout


def load_function(target: str) -> Callable[..., Any]:
    """The callable `MODULE:FUNCTION` or `PATH.py:FUNCTION` names; a clear error otherwise."""
    location, colon, name = target.rpartition(":")
    if not colon or not location or not name:
        raise InputError(
            f"python:{target}: expected python:MODULE:FUNCTION or python:FILE.py:FUNCTION"
        )
    try:
        if location.endswith(".py"):
            path = Path(location)
            if not path.is_file():
                raise InputError(f"python:{target}: no such file {location}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(location)
    except ImportError as exc:
        raise InputError(f"python:{target}: cannot import {location}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise InputError(f"python:{target}: {location} has no function {name}")
    return function


class FunctionRewarder(Rewarder):
    """Calls the user's function once per rollout; a non-number is an error naming it."""

    def __init__(self, target: str, function: Callable[..., Any]) -> None:
        self.name, self.function = f"python:{target}", function

    @classmethod
    def from_spec(cls, target: str) -> FunctionRewarder:
        return cls(target, load_function(target))

    def rewards(self, rollouts: Sequence[Rollout]) -> list[float]:
        values = []
        for rollout in rollouts:
            value = self.function(list(rollout.prompt), rollout.completion, dict(rollout.row))
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, int | float) or math.isnan(value):
                raise InputError(f"{self.name} returned {value!r}, not a number")
            values.append(float(value))
        return values
