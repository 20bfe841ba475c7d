"""Online losses: GRPO and RLOO over G sampled completions per prompt, scored by a judge.

Rows come in groups of `group_size` consecutive samples of the same prompt (B = prompts x G).
Rewards are data: advantages are computed from them without gradient. `old_token_logps` are the
log-probs of the policy that sampled; when the loop takes one optimisation step per generation
they equal the current ones, and None stands for exactly that (`token_logps.detach()`, as TRL
does when `num_iterations == 1`): the ratio is then 1 in value but carries the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from evalharness.errors import InputError

from .family import REQUIRED, member
from .registry import register


@dataclass(frozen=True)
class Samples:
    """G sampled completions per prompt, as every online loss reads them.

    `token_logps`, `token_mask`, `old_token_logps` and `ref_token_logps` are `[B, T]`, rows
    grouped by prompt, `group_size` = G. `rewards` `[B]` are on the policy's device (the
    judge's may arrive on the CPU). `old_token_logps` is the sampling policy's, or the
    detached current log-probs when the loop gave None (one step per generation).
    """

    token_logps: torch.Tensor
    token_mask: torch.Tensor
    rewards: torch.Tensor
    group_size: int
    old_token_logps: torch.Tensor
    ref_token_logps: torch.Tensor | None


#: What the loop hands an online loss (None: see `Samples`).
SAMPLE_INPUTS: dict[str, Any] = {
    "token_logps": REQUIRED,
    "token_mask": REQUIRED,
    "rewards": REQUIRED,
    "group_size": REQUIRED,
    "old_token_logps": None,
    "ref_token_logps": None,
}


def _samples(arguments: Mapping[str, Any]) -> tuple[Samples]:
    token_logps, old = arguments["token_logps"], arguments["old_token_logps"]
    samples = Samples(
        token_logps=token_logps,
        token_mask=arguments["token_mask"],
        rewards=arguments["rewards"].to(token_logps),
        group_size=arguments["group_size"],
        old_token_logps=token_logps.detach() if old is None else old,
        ref_token_logps=arguments["ref_token_logps"],
    )
    return (samples,)


def online_loss(
    name: str, *, summary: str
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register `score(samples, /, *, <options>)` as the online loss `name`: the registered loss
    takes `SAMPLE_INPUTS` by keyword (`family.member`) and hands `score` one `Samples`."""

    def wrap(score: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        loss = member(score, inputs=SAMPLE_INPUTS, prepare=_samples)
        return register(name, data="prompt", reference=False, summary=summary)(loss)

    return wrap


def grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Rewards `[B]` as `[prompts, G]`, checking that B is a whole number of groups of G >= 2."""
    if group_size < 2 or rewards.numel() % group_size:
        raise InputError(
            f"group_size must be >= 2 and divide the batch; got group_size={group_size} "
            f"for {rewards.numel()} samples"
        )
    return rewards.detach().reshape(-1, group_size)


def grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """`(R - mean_G) / (std_G + 1e-4)` per group, flattened back to `[B]`.

    As TRL's `GRPOTrainer._generate_and_score_completions`: the standard deviation is torch's
    default (unbiased, n - 1), and 1e-4 keeps a group of equal rewards at advantage 0.
    """
    groups = grouped(rewards, group_size)
    centred = groups - groups.mean(dim=-1, keepdim=True)
    return (centred / (groups.std(dim=-1, keepdim=True) + 1e-4)).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """`R_i - mean of the other G - 1 rewards` per group, flattened to `[B]`; sums to 0 per group.

    The leave-one-out baseline is independent of sample i, so the estimator stays unbiased
    (Ahmadian et al. 2024; TRL's `RLOOTrainer`).
    """
    groups = grouped(rewards, group_size)
    baselines = (groups.sum(dim=-1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baselines).reshape(-1)


def clipped_surrogate(
    log_ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """PPO's pessimistic objective as a loss: `-min(rho A, clip(rho, 1 - eps, 1 + eps) A)`."""
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    return -torch.min(ratio * advantages, clipped * advantages)


def k3_kl(token_logps: torch.Tensor, ref_token_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token: `exp(d) - d - 1`, d = ref - lp.

    Non-negative and unbiased for samples drawn from pi; GRPO adds it to the loss rather than
    to the reward.
    """
    difference = ref_token_logps - token_logps
    return torch.exp(difference) - difference - 1


def sequence_mean(token_values: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's completion tokens `[B]` (0 for an empty completion)."""
    mask = token_mask.to(token_values.dtype)
    return (token_values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)


def required_reference(ref_token_logps: torch.Tensor | None, beta: float) -> torch.Tensor:
    """The reference log-probs a KL term needs; a clear error instead of silently no KL."""
    if ref_token_logps is None:
        raise InputError(
            f"beta={beta} adds a KL term to the reference, but no reference log-probs were given"
        )
    return ref_token_logps


@online_loss(
    "grpo",
    summary="GRPO: group-normalised advantages, clipped token ratio, optional k3 KL to reference",
)
def grpo(samples: Samples, /, *, epsilon: float = 0.2, beta: float = 0.0) -> torch.Tensor:
    """GRPO (Shao et al. 2024) with the original per-sequence normalisation.

    Per token: `-min(rho A, clip(rho, 1 - eps, 1 + eps) A) + beta * k3`, rho = exp(lp - lp_old),
    A from `grpo_advantages`; each sequence's tokens are averaged and that mean is the
    example's loss (TRL `loss_type="grpo"`, `trl/trainer/grpo_trainer.py` `_compute_loss`).
    TRL's alternatives normalise by tokens instead: "bnpo" divides by the batch's token count,
    "dapo" by the accumulated batch's, "dr_grpo" by batch x max length; those remove the
    original's bias towards short correct and long wrong answers but are not implemented here.
    `beta` 0 (recent TRL's default; the paper used 0.04) needs no reference, which is why the
    method is registered without one; with `beta > 0` the loop must supply `ref_token_logps`.
    """
    token_logps = samples.token_logps
    advantages = grpo_advantages(samples.rewards, samples.group_size).unsqueeze(-1)
    per_token = clipped_surrogate(token_logps - samples.old_token_logps, advantages, epsilon)
    if beta != 0.0:
        reference = required_reference(samples.ref_token_logps, beta)
        per_token = per_token + beta * k3_kl(token_logps, reference)
    return sequence_mean(per_token, samples.token_mask)


def kl_shaped_rewards(
    rewards: torch.Tensor,
    old_token_logps: torch.Tensor,
    ref_token_logps: torch.Tensor | None,
    token_mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """RLOO's rewards `R - beta * sum_t (lp_old - lp_ref)`: the KL enters the reward, not the loss.

    As TRL's `RLOOTrainer`: a sequence-level k1 estimate from the sampling policy's log-probs,
    subtracted before the leave-one-out baseline, so it is a constant of the loss.
    """
    if beta == 0.0:
        return rewards.detach()
    reference = required_reference(ref_token_logps, beta)
    mask = token_mask.to(old_token_logps.dtype)
    kl = ((old_token_logps - reference) * mask).sum(dim=-1)
    return (rewards - beta * kl).detach()


@online_loss(
    "rloo",
    summary="RLOO: REINFORCE with a leave-one-out baseline, clipped sequence-level ratio",
)
def rloo(samples: Samples, /, *, epsilon: float = 0.2, beta: float = 0.0) -> torch.Tensor:
    """RLOO as TRL's current `RLOOTrainer._compute_loss` (`trl/trainer/rloo_trainer.py`).

    The whole completion is one action: with lp = sum of completion-token log-probs and
    rho = exp(lp - lp_old), the loss is `-min(rho A, clip(rho, 1 - eps, 1 + eps) A)` per
    sequence, A = `rloo_advantages` of the KL-shaped rewards. With one step per generation
    (old = None) rho is 1, the value is -A and the gradient is -A * grad(lp): plain REINFORCE
    with the leave-one-out baseline, as in Ahmadian et al. 2024; the clip only matters when a
    generation is reused for several steps. TRL's RLOOConfig defaults `beta` to 0.05; 0 here so
    the method needs no reference (pass `ref_token_logps` when setting it).
    """
    token_logps, old_tokens = samples.token_logps, samples.old_token_logps
    mask = samples.token_mask.to(token_logps.dtype)
    shaped = kl_shaped_rewards(
        samples.rewards, old_tokens, samples.ref_token_logps, samples.token_mask, beta
    )
    advantages = rloo_advantages(shaped, samples.group_size)
    log_ratio = ((token_logps - old_tokens) * mask).sum(dim=-1)
    return clipped_surrogate(log_ratio, advantages, epsilon)
