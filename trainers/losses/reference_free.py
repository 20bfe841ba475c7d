"""Reference-free pairwise losses: CPO, SimPO (with AlphaPO's reward shape), ORPO and ASFT.

No frozen reference: each scores the policy's own chosen and rejected log-probs (per-sequence
SUMS with token counts, as the DPO family receives them) and adds a likelihood term on the
chosen answer, which stands in for the reference's hold on the model. Transcribed from TRL 1.16
`experimental/cpo` (CPO, SimPO; AlphaPO's `alpha` from huggingface/trl's 2026 source,
`CPOTrainer.cpo_loss`) and `experimental/orpo`; ASFT is not in TRL and its docstring names its
source.

NLL terms under TRL's names (CPO's and SimPO's `cpo_alpha`, ORPO's NLL) are TRL's batch token
mean over the chosen rows (`scoring.batch_token_nll`); CPO and SimPO count the chosen completion
tokens (TRL masks the prompt in their labels), ORPO every chosen token after the first, prompt
included (TRL's ORPO labels are the attended input ids). ASFT's NLL stays its source's
per-example mean, −lp(y_w)/|y_w|. SimPO, ORPO and ASFT, which TRL feeds length-averaged
log-probs, receive sums and lengths and divide inside, so every method sees the same inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .options import describe
from .registry import register
from .scoring import batch_token_nll, mean_logps, smoothed_logistic

Tensor = torch.Tensor


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0, switching form at −log 2 so neither branch cancels (Mächler 2012)."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def log_odds(per_token: Tensor) -> Tensor:
    """log(P/(1−P)) with P = exp(ℓ̄): the odds score ORPO and ASFT put through the sigmoid."""
    return per_token - _log1mexp(per_token)


describe(
    "alpha",
    "cpo, simpo: AlphaPO reward (1 − e^(−α·lp))/α in place of lp (simpo: of ℓ̄); 0 = off. "
    "xpo: weight of the exploration term α·log π(reference's sample) (TRL's XPOConfig)",
)
describe(
    "cpo_alpha",
    "cpo, simpo: weight of the NLL on chosen completion tokens (TRL's name; `alpha` here before)",
)


def alphapo_rewards(logps: Tensor, alpha: float) -> Tensor:
    """AlphaPO's reward (1 − p^(−α))/α with p = e^lp, or lp itself when α = 0.

    TRL's `CPOTrainer.cpo_loss` (huggingface/trl 2026 source, `trl/experimental/cpo`) computes
    `(1 - exp(logps).pow(-alpha)) / alpha`; p^(−α) is written e^(−α·lp) here, the same number
    without first underflowing e^lp to 0 for a long completion's summed log-prob (TRL's form
    then gives ±inf). α → 0 recovers lp, which TRL uses when α == 0.
    """
    if not alpha:
        return logps
    return (1 - torch.exp(-alpha * logps)) / alpha


@register(
    "cpo",
    data="pairwise",
    reference=False,
    summary="CPO −log σ(β(lp_w − lp_l)) + cpo_alpha·NLL(chosen), no reference; alpha = AlphaPO",
)
def cpo(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    cpo_alpha: float = 1.0,
    alpha: float = 0.0,
) -> Tensor:
    """TRL CPOTrainer `sigmoid`: DPO with a uniform reference, plus the behaviour-cloning NLL.

    `cpo_alpha` is TRL's (default 1.0): without the NLL term nothing holds the chosen
    likelihood up, and CPO's derivation needs it as the stand-in for the reference's KL.
    Log-probs are sums here, as TRL's CPO uses for `sigmoid`. The NLL is TRL's `nll_loss`: the
    token mean over the batch's chosen COMPLETION tokens (TRL's CPO labels mask the prompt),
    −Σ_b lp_w,b / Σ_b |y_w,b|, row b carrying −lp_w,b·B/Σ|y_w|. `alpha` ≠ 0 is TRL's AlphaPO
    reward shape: the logistic term compares (1 − e^(−α·lp))/α instead of lp (on sums, as TRL
    does for `sigmoid`); the NLL keeps the plain log-probs.
    """
    chosen = alphapo_rewards(policy_chosen_logps, alpha)
    rejected = alphapo_rewards(policy_rejected_logps, alpha)
    nll = batch_token_nll(policy_chosen_logps, chosen_lengths)
    return smoothed_logistic(beta * (chosen - rejected), label_smoothing) + cpo_alpha * nll


@register(
    "simpo",
    data="pairwise",
    reference=False,
    summary="SimPO −log σ(β(ℓ̄_w − ℓ̄_l) − γ) on mean token log-probs, no reference; alpha = AlphaPO",
)
def simpo(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
    cpo_alpha: float = 0.0,
    alpha: float = 0.0,
) -> Tensor:
    """TRL CPOTrainer `simpo`: logits = β(ℓ̄_w − ℓ̄_l − γ/β), i.e. a target margin γ.

    `gamma` is the margin γ itself, TRL's `simpo_gamma` (NOT the SimPO repo's
    `gamma_beta_ratio` = γ/β). Defaults are the SimPO paper's (β = 2, γ = 1, i.e. ratio 0.5),
    not TRL's generic β = 0.1, γ = 0.5 under which the margin swamps the log-prob term.
    `cpo_alpha` > 0 adds TRL's NLL (CPO-SimPO), the same batch token mean over chosen
    completion tokens as `cpo`'s; SimPO itself has none. `alpha` ≠ 0 is AlphaPO (TRL's
    `loss_type="alphapo"` is exactly this loss with cpo_alpha = 0): the rewards become
    (1 − e^(−α·ℓ̄))/α of the mean token log-probs, β(R_w − R_l) − γ inside the sigmoid.
    """
    chosen = alphapo_rewards(mean_logps(policy_chosen_logps, chosen_lengths), alpha)
    rejected = alphapo_rewards(mean_logps(policy_rejected_logps, rejected_lengths), alpha)
    losses = smoothed_logistic(beta * (chosen - rejected) - gamma, label_smoothing)
    if cpo_alpha:
        losses = losses + cpo_alpha * batch_token_nll(policy_chosen_logps, chosen_lengths)
    return losses


@register(
    "orpo",
    data="pairwise",
    reference=False,
    summary="ORPO NLL(prompt + chosen) − λ·log σ(log odds_w − log odds_l), λ = beta as in TRL",
)
def orpo(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    policy_chosen_full_logps: Tensor,
    chosen_full_lengths: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """TRL ORPOTrainer: NLL − λ·log σ(log odds(ℓ̄_w) − log odds(ℓ̄_l)), odds = P/(1−P), P = e^ℓ̄.

    One stage, no reference: the NLL does SFT while the odds-ratio term penalises the rejected
    style. `beta` is the paper's λ (TRL's name, default 0.1). The odds use the completion-only
    means ℓ̄ = lp/|y| (TRL's `get_batch_logps` on prompt-masked labels). The NLL is TRL's
    `chosen_nll_loss`, a cross-entropy whose labels are the attended input ids: the token mean
    over EVERY chosen token after the first, prompt included, NLL = −Σ_b lp⁺_b / Σ_b n⁺_b with
    lp⁺ = `policy_chosen_full_logps`, n⁺ = `chosen_full_lengths` (row b carries −lp⁺_b·B/Σn⁺).
    """
    chosen = mean_logps(policy_chosen_logps, chosen_lengths)
    rejected = mean_logps(policy_rejected_logps, rejected_lengths)
    odds_ratio = F.logsigmoid(log_odds(chosen) - log_odds(rejected))
    nll = batch_token_nll(policy_chosen_full_logps, chosen_full_lengths)
    return nll - beta * odds_ratio


@register(
    "asft_aligned",
    data="pairwise",
    reference=False,
    summary="ASFT: NLL(chosen) + λ·(−log σ(β log odds_w) − log σ(−β log odds_l)), no reference",
)
def asft_aligned(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    beta: float = 1.0,
    lam: float = 1.0,
    nll_weight: float = 1.0,
) -> Tensor:
    """ASFT (Wang et al. 2024, arXiv 2409.10571): absolute likelihood, one logistic term per
    response on its own odds score, instead of Bradley–Terry on the difference.

    Pointwise terms push the chosen likelihood up and the rejected down independently, so the
    rejected one cannot be driven down faster than the chosen rises (the DPO failure ASFT
    targets). Transcribed from the `ASFTLoss` of turbo-llm/turbo-alignment (by the authors of
    "The Differences Between Direct Alignment Algorithms are a Blur", who reproduce ASFT):
    odds from ℓ̄ as in ORPO; β = 1 is the paper's ASFT (σ(log odds) = P, so the terms are
    −log P_w − log(1 − P_l)); β ≠ 1 is their tempered variant; `lam` weighs the alignment term
    and `nll_weight` the SFT term (0 for their two-stage setup, after a separate SFT). The
    paper's own text could not be read here, so it is cited through that implementation.
    """
    chosen = mean_logps(policy_chosen_logps, chosen_lengths)
    rejected = mean_logps(policy_rejected_logps, rejected_lengths)
    pointwise = -F.logsigmoid(beta * log_odds(chosen)) - F.logsigmoid(-beta * log_odds(rejected))
    return nll_weight * -chosen + lam * pointwise
