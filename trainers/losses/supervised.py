"""Supervised losses: SFT, DFT, anchored SFT, PoFT, and the reward model's Bradley–Terry loss.

The token-level methods (`sft`, `dft`, `asft_anchored`) average over every completion token of
the batch, as TRL's SFTTrainer does, rather than per sequence, so a long completion weighs in
proportion to its length. The registry wants per-example losses whose batch mean is the loss, so
each row returns its token sum scaled by B / (completion tokens in the batch); the mean of those
rows is exactly the token-level mean. That normalisation holds within one batch: a loop that
accumulates gradients over micro-batches of different token counts must re-weight them itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import register
from .scoring import batch_token_nll


def token_mean_contributions(token_losses: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Per-row values `[B]` whose mean equals the mean of `token_losses` over masked tokens.

    Row b gets `sum_t loss[b, t] * B / total_tokens`. An all-masked batch returns zeros rather
    than NaN, so one empty micro-batch cannot poison a run.
    """
    mask = token_mask.to(token_losses.dtype)
    row_sums = (token_losses * mask).sum(dim=-1)
    total_tokens = mask.sum().clamp(min=1.0)
    return row_sums * (token_losses.shape[0] / total_tokens)


def dft_token_losses(token_logps: torch.Tensor) -> torch.Tensor:
    """DFT's per-token loss `-sg(p_t) * log p_t`.

    The stop-gradient makes the gradient `p_t` times the NLL gradient: each token's update is
    rescaled by how likely the model already finds it, which is the "reward rectification" of
    Wu et al. 2025 (arXiv 2508.05629). Without the `detach` the loss would be `-p log p`, a
    different objective with a different gradient.
    """
    return -token_logps.detach().exp() * token_logps


@register(
    "sft",
    data="sft",
    reference=False,
    summary="token-level NLL of the completion, averaged over all completion tokens of the batch",
)
def sft(*, token_logps: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: `-log p(y_t)` averaged over the batch's completion tokens.

    The batch mean equals `F.cross_entropy` over the unmasked positions (mean reduction), which
    is what TRL's SFTTrainer and Hugging Face's causal-LM loss compute with prompt labels at -100.
    """
    return token_mean_contributions(-token_logps, token_mask)


@register(
    "dft",
    data="sft",
    reference=False,
    summary="dynamic fine-tuning: NLL per token weighted by the detached token probability",
)
def dft(*, token_logps: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Dynamic Fine-Tuning (Wu et al. 2025): `-sg(p_t) log p_t`, same normalisation as `sft`."""
    return token_mean_contributions(dft_token_losses(token_logps), token_mask)


@register(
    "asft_anchored",
    data="sft",
    reference=True,
    summary="DFT plus lambda * KL(p_ref || p_theta) per token, anchoring to the reference",
)
def asft_anchored(
    *,
    token_logps: torch.Tensor,
    token_mask: torch.Tensor,
    token_kl: torch.Tensor,
    kl_weight: float = 0.1,
) -> torch.Tensor:
    """Anchored SFT: DFT's token loss plus `kl_weight * KL(p_ref || p_theta)` at each token.

    DFT alone drifts (its weights favour tokens the model already likes); the full-vocabulary KL
    to the frozen reference holds the distribution in place. `token_kl` is computed by the
    scoring primitive's KL mode; `kl_weight` 0.1 is the value METHODS.md gives.
    """
    token_losses = dft_token_losses(token_logps) + kl_weight * token_kl
    return token_mean_contributions(token_losses, token_mask)


@register(
    "poft",
    data="sft",
    reference=True,
    summary="preference-oriented SFT: Bradley-Terry of the policy over a frozen aligned model",
)
def poft(
    *,
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    lengths: torch.Tensor,
    beta: float = 0.1,
    nll_weight: float = 0.0,
) -> torch.Tensor:
    """PoFT: `-log sigma(beta * (lp_theta(y) - lp_aligned(y)))`, optionally plus the SFT NLL.

    The "reference" here is a frozen *aligned* model whose log-probs are precomputed once: the
    target model is pushed to find the SFT data likelier than that model does, so noisy
    examples (which the aligned model also finds unlikely) push less. With `nll_weight` 0 the
    term replaces the NLL; otherwise the NLL is added with `sft`'s token-level normalisation.
    `beta` 0.1 is our default on summed log-probs (as for DPO), not a value from the paper.
    """
    losses = -F.logsigmoid(beta * (policy_logps - ref_logps))
    if nll_weight == 0.0:
        return losses
    return losses + nll_weight * batch_token_nll(policy_logps, lengths)


@register(
    "reward",
    data="pairwise",
    reference=False,
    summary="reward model: -log sigma(R_w - R_l - m) plus optional (R_w + R_l)^2 centring",
)
def reward(
    *,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margins: torch.Tensor | None = None,
    center_rewards_coefficient: float = 0.0,
) -> torch.Tensor:
    """Bradley–Terry loss of a scalar reward head, as TRL's `RewardTrainer.compute_loss`.

    TRL (`trl/trainer/reward_trainer.py`) computes `-logsigmoid(r_w - r_l - margin).mean()` and,
    when `center_rewards_coefficient` is set, adds `c * mean((r_w + r_l)**2)`: the BT loss sees
    only differences, so without centring the rewards' offset drifts freely. TRL's default is
    None (off), hence 0.0 here; its docs suggest 0.01. Both terms are per example, so the batch
    mean of this tensor equals TRL's loss.
    """
    margin = 0.0 if margins is None else margins
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - margin)
    return losses + center_rewards_coefficient * (chosen_rewards + rejected_rewards) ** 2
