"""PPO with a value head, as TRL's `PPOTrainer` computes it (trl/experimental/ppo, TRL 1.9.0).

A rollout batch is scored once: per-token rewards are the KL penalty to the reference
(`-kl_coef * kl`, TRL's `kl_estimator` k1 or k3, from the sampling policy's log-probs) plus the
sequence's score on one position, optionally whitened; GAE (`gamma`, `lam`) turns them and the
value head's predictions into advantages (whitened over the batch's completion tokens) and
returns. Each PPO mini-batch then minimises `pg_loss + vf_coef * vf_loss`: TRL's clipped
policy loss and clipped value loss, each a masked mean over the mini-batch's tokens.

Layout. Tensors are `[B, T]`; `token_mask` is true on each row's completion tokens (EOS
included), one contiguous run per row. TRL's `~padding_mask` is that mask for completions laid
out from column 0 with a pad token distinct from EOS. TRL's value mask (`~padding_mask_p1`)
reaches one position further: the position after the last completion token, where TRL puts
the score, so the value there learns the score and the last token's advantage reads it through
`gamma * V`. When a completion ends in the last column the score goes on its last token
instead (TRL's `actual_end`), so where that happens depends on the layout's width: the loop
lays completions out as TRL does, from column 0, `width` = the longest completion.

The method is registered with the loss of one mini-batch holding the whole rollout batch (one
epoch, one mini-batch), computed from the rollout scores: that is TRL's first update exactly.
The loop (`trainers.ppo`) calls `ppo_targets` once per rollout batch and `ppo_loss` per
mini-batch, `num_ppo_epochs` times over `num_mini_batches` shuffled mini-batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from evalharness.errors import InputError

from .family import REQUIRED, member
from .options import describe
from .registry import register

Tensor = torch.Tensor

KL_ESTIMATORS = ("k1", "k3")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask` is true (TRL's `masked_mean` with `axis=None`)."""
    mask = mask.to(torch.bool)
    return torch.where(mask, values, 0.0).sum() / mask.sum()


def masked_var(values: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance where `mask` is true (TRL's `masked_var`, Bessel-corrected).

    TRL divides by zero with one masked value and raises with none; both are a clear error here.
    """
    count = int(mask.sum())
    if count < 2:
        raise InputError(
            f"PPO whitening needs at least 2 completion tokens in the batch; got {count}"
        )
    centred = values - masked_mean(values, mask)
    return masked_mean(centred**2, mask) * (count / (count - 1))


def masked_whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True) -> Tensor:
    """`(x - mean) / sqrt(var + 1e-8)` over the masked values; `shift_mean=False` adds the mean
    back (TRL's `masked_whiten`, used so for rewards, whose sign carries meaning)."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + 1e-8)
    return whitened if shift_mean else whitened + mean


def value_mask(token_mask: Tensor) -> Tensor:
    """The completion tokens and the one position after each completion (TRL's
    `~padding_mask_p1`): where values are predicted and the value loss is taken."""
    mask = token_mask.to(torch.bool)
    extended = mask.clone()
    extended[:, 1:] |= mask[:, :-1]
    return extended


def score_positions(token_mask: Tensor) -> Tensor:
    """`[B]` column that receives each sequence's score: one past its last completion token, or
    that token itself when it is in the last column (TRL's `actual_end`)."""
    mask = token_mask.to(torch.bool)
    empty = (~mask.any(dim=-1)).nonzero().flatten().tolist()
    if empty:
        raise InputError(f"PPO needs at least one completion token per row; rows {empty} have none")
    width = mask.shape[-1]
    last = width - 1 - mask.flip(-1).to(torch.int64).argmax(dim=-1)
    return torch.where(last + 1 < width, last + 1, last)


def kl_estimate(
    token_logps: Tensor, ref_token_logps: Tensor, token_mask: Tensor, estimator: str
) -> Tensor:
    """Per-token KL(pi || pi_ref) estimate on completion tokens, 0 elsewhere.

    With logr = lp_ref - lp: k1 is `-logr` (unbiased, can be negative), k3 is
    `exp(logr) - 1 - logr` (non-negative, lower variance; http://joschu.net/blog/kl-approx.html).
    """
    log_ratio = ref_token_logps - token_logps
    if estimator == "k1":
        kl = -log_ratio
    elif estimator == "k3":
        kl = (log_ratio.exp() - 1) - log_ratio
    else:
        raise InputError(f"kl_estimator={estimator!r} must be one of {', '.join(KL_ESTIMATORS)}")
    return torch.where(token_mask.to(torch.bool), kl, 0.0)


def penalised_scores(scores: Tensor, has_eos: Tensor, penalty: float | None) -> Tensor:
    """Scores less `penalty` where a completion has no EOS (TRL's `missing_eos_penalty`: a
    completion cut by the length limit is worse than its text alone says); None = unchanged."""
    if penalty is None:
        return scores
    return torch.where(has_eos.to(torch.bool), scores, scores - penalty)


def token_rewards(
    scores: Tensor,
    old_token_logps: Tensor,
    ref_token_logps: Tensor | None,
    token_mask: Tensor,
    *,
    kl_coef: float,
    kl_estimator: str,
) -> tuple[Tensor, Tensor]:
    """`(rewards, kl)`, both `[B, T]`: `-kl_coef * kl` per completion token, plus each score at
    its `score_positions` column. The KL is the sampling policy's (no gradient)."""
    old = old_token_logps.detach()
    if ref_token_logps is None:
        if kl_coef != 0.0:
            raise InputError(
                f"kl_coef={kl_coef} adds a KL penalty to the reference, but no reference "
                "log-probs were given"
            )
        kl = torch.zeros_like(old)
    else:
        kl = kl_estimate(old, ref_token_logps.detach(), token_mask, kl_estimator)
    rows = torch.arange(old.shape[0], device=old.device)
    rewards = (-kl_coef * kl).index_put(
        (rows, score_positions(token_mask)), scores.detach().to(old), accumulate=True
    )
    return rewards, kl


def generalised_advantages(
    rewards: Tensor, values: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE (Schulman et al. 2016) over every column, right to left: `(advantages, returns)`.

    delta_t = r_t + gamma * V_{t+1} - V_t (V past the last column is 0), A_t = delta_t +
    gamma * lam * A_{t+1}, returns = A + V; as TRL's loop over `gen_length`.
    """
    last = torch.zeros_like(rewards[:, 0])
    reversed_advantages = []
    width = rewards.shape[1]
    for t in reversed(range(width)):
        next_values = values[:, t + 1] if t < width - 1 else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last = delta + gamma * lam * last
        reversed_advantages.append(last)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    return advantages, advantages + values


@dataclass(frozen=True)
class Targets:
    """What a rollout batch gives every PPO mini-batch drawn from it (all `[B, T]`, no grad).

    `values` are the sampling-time predictions masked to `value_mask` (the value clip's
    centre); `kl` and `rewards` are kept for metrics.
    """

    advantages: Tensor
    returns: Tensor
    values: Tensor
    rewards: Tensor
    kl: Tensor
    value_mask: Tensor


def ppo_targets(
    scores: Tensor,
    old_token_logps: Tensor,
    ref_token_logps: Tensor | None,
    old_values: Tensor,
    token_mask: Tensor,
    *,
    kl_coef: float = 0.05,
    kl_estimator: str = "k1",
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_rewards: bool = False,
) -> Targets:
    """Advantages and returns of a rollout batch, as TRL's steps 4-6 (`PPOTrainer.train`)."""
    with torch.no_grad():
        token_mask = token_mask.to(torch.bool)
        values_mask = value_mask(token_mask)
        values = torch.where(values_mask, old_values.detach().to(old_token_logps), 0.0)
        rewards, kl = token_rewards(
            scores,
            old_token_logps,
            ref_token_logps,
            token_mask,
            kl_coef=kl_coef,
            kl_estimator=kl_estimator,
        )
        if whiten_rewards:
            rewards = masked_whiten(rewards, values_mask, shift_mean=False)
            rewards = torch.where(values_mask, rewards, 0.0)
        advantages, returns = generalised_advantages(rewards, values, gamma=gamma, lam=lam)
        advantages = torch.where(token_mask, masked_whiten(advantages, token_mask), 0.0)
    return Targets(advantages, returns, values, rewards, kl, values_mask)


def policy_loss_terms(
    token_logps: Tensor, old_token_logps: Tensor, advantages: Tensor, cliprange: float
) -> tuple[Tensor, Tensor]:
    """Per token `max(-A rho, -A clip(rho, 1 - c, 1 + c))`, rho = exp(lp - lp_old), and whether
    the clipped term won (TRL's `pg_clipfrac` numerator)."""
    ratio = torch.exp(token_logps - old_token_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return torch.max(unclipped, clipped), clipped > unclipped


def value_loss_terms(
    values: Tensor, old_values: Tensor, returns: Tensor, values_mask: Tensor, cliprange_value: float
) -> tuple[Tensor, Tensor]:
    """Per position `max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)`, V masked to 0
    outside `values_mask` as TRL does, and whether the clipped term won."""
    predicted = torch.where(values_mask, values, 0.0)
    clipped_values = torch.clamp(
        predicted, old_values - cliprange_value, old_values + cliprange_value
    )
    unclipped = torch.square(predicted - returns)
    clipped = torch.square(clipped_values - returns)
    return torch.max(unclipped, clipped), clipped > unclipped


@dataclass(frozen=True)
class Loss:
    """One mini-batch's PPO loss (`loss = policy + vf_coef * value`) and TRL's statistics."""

    loss: Tensor
    policy: Tensor
    value: Tensor
    policy_clipfrac: Tensor
    value_clipfrac: Tensor
    approxkl: Tensor


def ppo_loss(
    token_logps: Tensor,
    old_token_logps: Tensor,
    values: Tensor,
    token_mask: Tensor,
    targets: Targets,
    *,
    cliprange: float = 0.2,
    cliprange_value: float = 0.2,
    vf_coef: float = 0.1,
) -> Loss:
    """TRL's mini-batch loss: `masked_mean(pg_loss_max, mask) + vf_coef * 0.5 *
    masked_mean(vf_loss_max, value_mask)`, each mean over the mini-batch's tokens.

    `targets` are the rollout batch's rows of this mini-batch (`select(targets, rows)`).
    """
    token_mask = token_mask.to(torch.bool)
    old = old_token_logps.detach()
    policy_terms, policy_clipped = policy_loss_terms(
        token_logps, old, targets.advantages, cliprange
    )
    value_terms, value_clipped = value_loss_terms(
        values, targets.values, targets.returns, targets.value_mask, cliprange_value
    )
    policy = masked_mean(policy_terms, token_mask)
    value = 0.5 * masked_mean(value_terms, targets.value_mask)
    with torch.no_grad():
        difference = torch.where(token_mask, token_logps.detach() - old, 0.0)
        stats = {
            "policy_clipfrac": masked_mean(policy_clipped.to(policy.dtype), token_mask),
            "value_clipfrac": masked_mean(value_clipped.to(value.dtype), targets.value_mask),
            "approxkl": 0.5 * (difference**2).mean(),
        }
    return Loss(policy + vf_coef * value, policy, value, **stats)


def select(targets: Targets, rows: Tensor) -> Targets:
    """The rollout targets of a mini-batch's rows."""
    return Targets(*(getattr(targets, field)[rows] for field in Targets.__dataclass_fields__))


def row_split(values: Tensor, mask: Tensor) -> Tensor:
    """`[B]` shares of `masked_mean(values, mask)` whose mean is that masked mean: each row's
    masked sum times B over the batch's masked count (the registry's per-example losses)."""
    mask = mask.to(torch.bool)
    return torch.where(mask, values, 0.0).sum(dim=-1) * (mask.shape[0] / mask.sum())


#: What the loop hands `ppo` (None: the detached current values, as for `old_token_logps`).
PPO_INPUTS: dict[str, Any] = {
    "token_logps": REQUIRED,
    "token_mask": REQUIRED,
    "rewards": REQUIRED,
    "values": REQUIRED,
    "old_token_logps": None,
    "old_values": None,
    "ref_token_logps": None,
}

#: Options the loop applies around the loss (TRL's names and defaults); `missing_eos_penalty`
#: means what it means for the online pair methods and is documented with them.
LOOP_OPTIONS: dict[str, Any] = {
    "num_ppo_epochs": 4,
    "num_mini_batches": 1,
    "missing_eos_penalty": None,
}


def _rollout(arguments: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Any]:
    token_logps, values = arguments["token_logps"], arguments["values"]
    old_logps, old_values = arguments["old_token_logps"], arguments["old_values"]
    old_logps = token_logps.detach() if old_logps is None else old_logps
    old_values = values.detach() if old_values is None else old_values
    return (
        token_logps,
        old_logps,
        values,
        old_values,
        arguments["token_mask"],
        arguments["ref_token_logps"],
    )


def _ppo(
    token_logps: Tensor,
    old_token_logps: Tensor,
    values: Tensor,
    old_values: Tensor,
    token_mask: Tensor,
    ref_token_logps: Tensor | None,
    /,
    *,
    rewards: Tensor,
    cliprange: float = 0.2,
    cliprange_value: float = 0.2,
    vf_coef: float = 0.1,
    kl_coef: float = 0.05,
    kl_estimator: str = "k1",
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_rewards: bool = False,
) -> Tensor:
    """PPO's loss on one rollout batch taken as one mini-batch, split into `[B]` rows whose
    mean is TRL's `pg_loss + vf_coef * vf_loss` (`rewards` are the sequences' scores)."""
    token_mask = token_mask.to(torch.bool)
    targets = ppo_targets(
        rewards,
        old_token_logps,
        ref_token_logps,
        old_values,
        token_mask,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
        gamma=gamma,
        lam=lam,
        whiten_rewards=whiten_rewards,
    )
    policy_terms, _ = policy_loss_terms(
        token_logps, old_token_logps.detach(), targets.advantages, cliprange
    )
    value_terms, _ = value_loss_terms(
        values, targets.values, targets.returns, targets.value_mask, cliprange_value
    )
    return row_split(policy_terms, token_mask) + vf_coef * 0.5 * row_split(
        value_terms, targets.value_mask
    )


ppo = register(
    "ppo",
    data="prompt",
    reference=True,
    summary="PPO: KL-penalised per-token rewards, GAE with a value head, clipped policy and "
    "value losses, several epochs over mini-batches (TRL's PPOTrainer)",
)(member(_ppo, inputs=PPO_INPUTS, prepare=_rollout, options=LOOP_OPTIONS))


def _kl_estimator(value: Any) -> str:
    if value not in KL_ESTIMATORS:
        raise InputError(f"kl_estimator={value!r} must be one of {', '.join(KL_ESTIMATORS)}")
    return str(value)


def _at_least_one(name: str) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = int(value)
        if number < 1:
            raise InputError(f"{name}={value} must be at least 1")
        return number

    return convert


describe("cliprange", "ppo: policy ratio clip ε, ratio kept in [1 − ε, 1 + ε]")
describe("cliprange_value", "ppo: value clip, V kept within ± this of its value at sampling")
describe("vf_coef", "ppo: weight of the clipped value loss in the loss")
describe("kl_coef", "ppo: weight of the per-token KL penalty to the reference in the reward")
describe(
    "kl_estimator",
    "ppo: per-token KL estimate, k1 = lp − lp_ref | k3 = e^(lp_ref − lp) − 1 − (lp_ref − lp)",
    _kl_estimator,
)
describe("gamma", "ppo: GAE discount γ; simpo: the target margin γ")
describe("lam", "ppo: GAE λ (bias-variance trade-off of the advantages); asft_aligned: weight λ")
describe("whiten_rewards", "ppo: whiten the per-token rewards over the batch (mean kept)")
describe(
    "num_ppo_epochs", "ppo: passes over each batch of rollouts", _at_least_one("num_ppo_epochs")
)
describe(
    "num_mini_batches",
    "ppo: mini-batches (optimizer steps) per pass over a batch",
    _at_least_one("num_mini_batches"),
)
