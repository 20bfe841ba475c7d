"""Every alignment method as one loss function; `get(name)` returns it.

Modules by family: `supervised` (sft, dft, asft_anchored, poft, reward), `pairwise` (the DPO
family and its `mixture`, cpo, simpo, orpo, asft_aligned), `unpaired` (kto, bco), `ranking`
(rrhf, pro, aft), `online` (grpo, rloo). Importing them registers their methods.
"""

from __future__ import annotations

import importlib

from .registry import (
    DATA_FORMATS,
    INPUT_OPTIONS,
    INPUTS,
    OPTIONS,
    Method,
    describe,
    get,
    method,
    methods,
    register,
)

FAMILIES = ("supervised", "pairwise", "unpaired", "ranking", "online")


def _load_all() -> None:
    for family in FAMILIES:
        importlib.import_module(f"{__name__}.{family}")


__all__ = [
    "DATA_FORMATS",
    "INPUTS",
    "INPUT_OPTIONS",
    "OPTIONS",
    "Method",
    "describe",
    "get",
    "method",
    "methods",
    "register",
]
