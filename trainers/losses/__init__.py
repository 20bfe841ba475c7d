"""Every alignment method as one loss function; `method(name)` finds it, `get(name)` returns it.

One module per family: `supervised` (sft, dft, asft_anchored, poft, reward), `dpo` (the DPO
family with its shared scoring of preference pairs against a reference), `mixture` (weighted
sums of DPO-family losses, TRL's `loss_type` list), `reference_free` (cpo, simpo, orpo,
asft_aligned), `unpaired` (kto, bco), `ranking` (rrhf, pro, aft), `online` (grpo, rloo),
`online_pairs` (online_dpo, xpo, nash_md), `distill` (gkd), `ppo`. Importing a family registers
its methods; `pairwise` gathers every loss on pairwise data.

Shared pieces: `registry` (methods, the inputs a loss may ask for, hyperparameter checking),
`options` (what each hyperparameter means and how a user's value is converted), `family` (a
family's inputs declared once for all its members) and `scoring` (per-token means, TRL's batch
NLL, the logistic term). None of them imports a family or this package, so a family can import
them without importing the loader below back.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from .options import INPUT_OPTIONS, OPTIONS, describe
from .registry import (
    DATA_FORMATS,
    INPUTS,
    Method,
    hyperparameters,
    lookup,
    register,
    registered,
)

FAMILIES = (
    "supervised",
    "dpo",
    "mixture",
    "reference_free",
    "unpaired",
    "ranking",
    "online",
    "online_pairs",
    "distill",
    "ppo",
)


def _load_all() -> None:
    for family in FAMILIES:
        importlib.import_module(f"{__name__}.{family}")


def method(name: str) -> Method:
    """The method registered as `name`, every family imported first."""
    _load_all()
    return lookup(name)


def get(name: str) -> Callable[..., torch.Tensor]:
    """The loss function registered as `name`."""
    return method(name).loss


def methods() -> list[Method]:
    """Every registered method, by name."""
    _load_all()
    return registered()


__all__ = [
    "DATA_FORMATS",
    "INPUTS",
    "INPUT_OPTIONS",
    "OPTIONS",
    "Method",
    "describe",
    "get",
    "hyperparameters",
    "method",
    "methods",
    "register",
]
