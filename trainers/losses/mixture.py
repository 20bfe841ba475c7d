"""Weighted mixtures of DPO-family losses: TRL's `loss_type` list with `loss_weights`.

TRL 1.x lets `loss_type` name several losses and sums their batch means, each times its weight
(huggingface/trl's 2026 source, `DPOTrainer._compute_loss`); MPO is the best-known such mix.
`mixture` is that one method: it calls the DPO-family losses of `dpo` by their TRL names, with
the inputs and shared hyperparameters each one names, plus TRL's `sft` term.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from evalharness.errors import InputError

from . import dpo as dpo_family
from .dpo import chosen_nll
from .options import describe
from .registry import register

Tensor = torch.Tensor

#: TRL's `loss_type` names a mixture may combine, with the loss each one is here; `sft` (the NLL
#: on chosen completion tokens) is computed by `mixture` itself.
MIXABLE: dict[str, Callable[..., Tensor] | None] = {
    "sigmoid": dpo_family.dpo,
    "hinge": dpo_family.hinge,
    "ipo": dpo_family.ipo,
    "exo_pair": dpo_family.exo_pair,
    "nca_pair": dpo_family.nca_pair,
    "robust": dpo_family.robust,
    "bco_pair": dpo_family.bco_pair,
    "sppo_hard": dpo_family.sppo_hard,
    "aot": dpo_family.aot,
    "aot_unpaired": dpo_family.aot_unpaired,
    "apo_zero": dpo_family.apo_zero,
    "apo_down": dpo_family.apo_down,
    "discopop": dpo_family.discopop,
    "sigmoid_norm": dpo_family.sigmoid_norm,
    "sft": None,
}


def _items(value: Any) -> list[Any]:
    """A YAML list, a comma list from the command line ("a,b,c") or one scalar, as a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",")]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def _loss_types(value: Any) -> list[str]:
    """`loss_type` as a list of TRL names, each one that `MIXABLE` knows."""
    names = [str(name).strip() for name in _items(value)]
    if not names or not all(names):
        raise InputError(f"loss_type={value!r} must name one or more losses")
    for name in names:
        if name not in MIXABLE:
            raise InputError(
                f"loss_type {name!r} is not one of {', '.join(MIXABLE)} (TRL's names: `dpo` is "
                "`sigmoid`)"
            )
    return names


def _loss_weights(value: Any) -> list[float]:
    """`loss_weights` as a list of finite numbers; empty (the default) means all 1.0."""
    if value is None or value == "" or (isinstance(value, Sequence) and not value):
        return []
    weights = []
    for item in _items(value):
        try:
            weight = float(item)
        except (TypeError, ValueError):
            raise InputError(f"loss_weights: {item!r} is not a number") from None
        if not math.isfinite(weight):
            raise InputError(f"loss_weights: {item!r} is not a finite number")
        weights.append(weight)
    return weights


describe(
    "loss_type",
    "mixture: TRL loss_type names, a YAML or comma list (sigmoid = dpo, sft = chosen NLL; "
    "MPO: sigmoid,bco_pair,sft). online_dpo, xpo: sigmoid or ipo (IPO on sums, as TRL's online "
    "trainers)",
    _loss_types,
)
describe(
    "loss_weights",
    "mixture: a weight per loss_type, loss = Σ w_i·mean(loss_i); empty = all 1.0 "
    "(MPO: 0.8,0.2,1.0)",
    _loss_weights,
)


@register(
    "mixture",
    data="pairwise",
    reference=True,
    summary="Σ w_i·loss_i over TRL loss_type names (loss_weights); MPO = sigmoid,bco_pair,sft",
)
def mixture(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    delta: Tensor,
    policy_chosen_nll_logps: Tensor | None = None,
    loss_type: str | Sequence[str] = "sigmoid",
    loss_weights: str | Sequence[float] = (),
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    tau: float = 0.05,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL's `loss_type` list: Σ_i w_i·loss_i, each loss_i the method of that TRL name above.

    TRL 1.x `DPOTrainer._compute_loss` (and 0.19.1 `get_batch_loss_metrics`) sums
    `per_sequence_loss.mean() * loss_weight` over `zip(loss_type, loss_weights)` with every
    weight 1.0 when `loss_weights` is None; this returns the weighted sum per row, whose batch
    mean is that total. All parts share β, `label_smoothing` (so `exo_pair` needs it > 0, as in
    TRL; `sigmoid` is this repo's `dpo`, i.e. TRL 0.19.1's smoothed sigmoid, which ε = 0 makes
    TRL 1.x's), `tau` (discopop) and the f-divergence. `sft` is TRL's NLL over the batch's chosen
    completion tokens (the unweighted sums under LD-DPO), and `bco_pair` reads the loop's δ
    (TRL 1.x has none: δ = 0). MPO (Wang et al. 2024, arXiv 2411.10442) is
    loss_type = sigmoid, bco_pair, sft with loss_weights = 0.8, 0.2, 1.0. With `aot` or
    `aot_unpaired` in the list only the batch mean is meaningful (their rows are sorted ranks).
    """
    names = _loss_types(loss_type)
    weights = _loss_weights(loss_weights) or [1.0] * len(names)
    if len(weights) != len(names):
        raise InputError(
            f"loss_weights has {len(weights)} value(s) for {len(names)} loss_type(s) "
            f"({', '.join(names)})"
        )
    available: dict[str, Any] = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": rejected_lengths,
        "delta": delta,
        "policy_chosen_nll_logps": policy_chosen_nll_logps,
        "beta": beta,
        "label_smoothing": label_smoothing,
        "tau": tau,
        "f_divergence_type": f_divergence_type,
        "f_alpha_divergence_coef": f_alpha_divergence_coef,
    }
    total = torch.zeros_like(policy_chosen_logps)
    for name, weight in zip(names, weights, strict=True):
        loss = MIXABLE[name]
        if loss is None:
            part = chosen_nll(policy_chosen_logps, chosen_lengths, policy_chosen_nll_logps)
        else:
            wanted = inspect.signature(loss).parameters
            part = loss(**{key: value for key, value in available.items() if key in wanted})
        total = total + weight * part
    return total
