"""Unpaired (binary feedback) losses: KTO and BCO, one completion per row with a desirable label.

Both follow TRL: `KTOTrainer.kto_loss` (`trl/trainer/kto_trainer.py`) and `BCOTrainer.bco_loss`
(`trl/trainer/bco_trainer.py`). TRL splits a batch into desirable and undesirable rows and
concatenates their losses; here each row keeps its place in the batch. The batch mean is the
same (TRL averages the concatenation), and per-row values line up with the data for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import register


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z0: the batch estimate of KL(pi || pi_ref), clamped at 0 and detached.

    The estimate comes from mismatched prompt/completion pairs (completion i scored against
    prompt j) so it is not the rows' own log-ratio. It is a baseline, not a training target: TRL
    detaches it, and a gradient through it would let the policy lower the loss by moving the
    mismatched pairs. A single-row batch has no mismatched pair, so KTO needs B > 1.
    TRL also averages it across processes (`accelerator.gather`); this loop runs one process.
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


@register(
    "kto",
    data="binary",
    reference=True,
    summary="Kahneman-Tversky optimisation: sigmoid value of the log-ratio against a KL baseline",
)
def kto(
    *,
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    ref_kl_logps: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024) as TRL's `kto_loss`, per example in input order.

    With r = lp(y) - lp_ref(y): desirable rows `w_D * (1 - sigma(beta * (r - z0)))`, undesirable
    rows `w_U * (1 - sigma(beta * (z0 - r)))`. The weights let a user rebalance unequal counts of
    desirable and undesirable examples (the paper suggests keeping w_D n_D / (w_U n_U) in
    [1, 4/3]). Defaults are TRL's KTOConfig defaults.
    """
    z0 = kto_reference_point(policy_kl_logps, ref_kl_logps)
    log_ratios = policy_logps - ref_logps
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (log_ratios - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratios)))
    return torch.where(labels.bool(), desirable, undesirable)


def delta_update_values(inputs: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    """The detached values TRL's `RunningMoments.update` folds into δ at one training step.

    Each value counts once in δ's running mean, so the shape is the semantics:

    - `bco` (`BCOTrainer.bco_loss`): every row's reward β·(lp − lp_ref), desirable and
      undesirable alike, `[B]`: a step adds B values and δ is the mean over all rows seen.
    - `bco_pair` (TRL 0.19.1 `DPOTrainer.dpo_loss`): the batch mean of β·[r_w ; r_l] as ONE
      value, `[1]`: δ is the mean of per-step means, so a short last batch weighs as much as a
      full one (counting its 2B rewards instead would weigh it by size).

    Under DDP the caller sums values and counts over processes before folding them in, as TRL's
    `get_global_statistics` does.
    """
    if "policy_chosen_logps" in inputs:
        chosen = inputs["policy_chosen_logps"] - inputs["ref_chosen_logps"]
        rejected = inputs["policy_rejected_logps"] - inputs["ref_rejected_logps"]
        return (beta * torch.cat([chosen, rejected])).mean().reshape(1).detach()
    return (beta * (inputs["policy_logps"] - inputs["ref_logps"])).detach()


@register(
    "bco",
    data="binary",
    reference=True,
    summary="binary classifier optimisation: logistic loss of beta * log-ratio against a mean",
)
def bco(
    *,
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    delta: torch.Tensor | float,
    beta: float = 0.1,
) -> torch.Tensor:
    """BCO (Jung et al. 2024) as TRL's `bco_loss`: a logistic classifier on the implicit reward.

    Desirable rows `-log sigma(beta * r - delta)`, undesirable rows `-log sigma(-(beta * r -
    delta))`, r = lp(y) - lp_ref(y); the loss treats `delta` as a constant.

    `delta` is TRL's `RunningMoments.mean` (`trl/trainer/utils.py`): it starts at mean 0,
    count 1e-24, and each update with n values of mean m sets `mean += (m - mean) * n /
    (count + n)`, `count += n`, i.e. the plain (count-weighted, not exponential) mean of every
    value seen. `bco_loss` updates it with `beta * (policy_logps - ref_logps)` of *all* rows of
    the batch, desirable and undesirable, detached and gathered across processes (the loop sums
    values and counts over processes; see `delta_update_values`), *before*
    computing the loss, so the current batch is already in its own delta; evaluation
    (`do_train=False`) reads it without updating. TRL's optional underlying-distribution
    matching (UDM: density-ratio weights from a prompt-embedding classifier) is not
    implemented: it needs an extra embedding model, and without it TRL's loss is this one.
    """
    shift = torch.as_tensor(delta, dtype=policy_logps.dtype, device=policy_logps.device)
    logits = beta * (policy_logps - ref_logps) - shift.detach()
    return torch.where(labels.bool(), -F.logsigmoid(logits), -F.logsigmoid(-logits))
