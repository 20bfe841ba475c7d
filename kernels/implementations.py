"""The scoring implementations and the `EVALHARNESS_SCORING_IMPL` override, without torch.

The CLI checks the variable when it starts (`check_scoring_env`): a typo would otherwise
surface as an exception from the first scoring call, after a model load and with a run half
written. Importing this module must stay cheap, so it imports neither torch nor triton.
"""

from __future__ import annotations

import importlib.util
import os

from evalharness.errors import InputError

ENV_VAR = "EVALHARNESS_SCORING_IMPL"
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "triton", "chunked", "reference")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def implementation_from_env() -> str:
    """The implementation `auto` stands for: the variable's value, or `auto` when unset."""
    value = os.environ.get(ENV_VAR, "").strip() or "auto"
    if value not in IMPLEMENTATIONS:
        raise InputError(
            f"{ENV_VAR}={value!r} is not a scoring implementation; "
            f"allowed: {', '.join(IMPLEMENTATIONS)} (or unset)"
        )
    return value


def check_scoring_env() -> None:
    """Everything about the variable that can be known before a model picks its device."""
    if implementation_from_env() == "triton" and not triton_installed():
        raise InputError(f"{ENV_VAR}=triton needs the triton package (pip install triton)")
