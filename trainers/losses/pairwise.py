"""Every loss on pairwise preference data, by name, whichever family defines it.

The pairwise data format (prompt, chosen, rejected) feeds three families: the DPO family with a
reference (`dpo`), its weighted mixtures (`mixture`) and the reference-free losses
(`reference_free`). This module gathers them under one roof for code that wants "the pairwise
losses" without knowing the family; the reward model's loss, also on pairs, is `supervised`'s.
"""

from __future__ import annotations

from .dpo import (
    aot,
    aot_unpaired,
    apo_down,
    apo_zero,
    bco_pair,
    discopop,
    dpo,
    exo_pair,
    hinge,
    ipo,
    nca_pair,
    robust,
    sigmoid_norm,
    sppo_hard,
)
from .mixture import mixture
from .reference_free import asft_aligned, cpo, orpo, simpo

__all__ = [
    "aot",
    "aot_unpaired",
    "apo_down",
    "apo_zero",
    "asft_aligned",
    "bco_pair",
    "cpo",
    "discopop",
    "dpo",
    "exo_pair",
    "hinge",
    "ipo",
    "mixture",
    "nca_pair",
    "orpo",
    "robust",
    "sigmoid_norm",
    "simpo",
    "sppo_hard",
]
