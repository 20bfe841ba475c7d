"""Online DPO, XPO and Nash-MD: losses over two fresh samples per prompt that a judge compared.

Transcribed from TRL 1.9.0 (tag v1.9.0, the last release with all three trainers; later 1.x
releases removed XPO and Nash-MD), `trl/experimental/`:

- `online_dpo/online_dpo_trainer.py` `OnlineDPOTrainer.training_step` (l. 1199-1238): rewards
  less `missing_eos_penalty` where a sample has no EOS, the pair ordered by
  `first >= second`, padded tokens masked, DPO (`sigmoid`) or IPO (`ipo`) on the sums.
- `xpo/xpo_trainer.py` `XPOTrainer._compute_rewards` (l. 255-271), `training_step` (l. 458:
  `chosen_mask = model_scores >= ref_scores`) and `_compute_losses` (l. 305-343): the same
  DPO loss on the pair (policy sample, reference sample) plus `alpha` times the policy's
  log-likelihood of the reference's sample, its exploration term.
- `nash_md/nash_md_trainer.py` `GeometricMixtureWrapper.forward` (l. 80-89): the mixture
  policy's next-token log-probs `log_softmax(c * ref_logits + (1 - c) * policy_logits)`;
  `training_step` (l. 477: `probability = sigmoid(model_scores - mixture_scores)`) and
  `_compute_losses` (l. 367-385): REINFORCE on that probability with 0.5 as control variate,
  plus `beta` times a REINFORCE estimate of KL(policy || reference).

The loop hands every loss per-token log-probs `[B, T]` (0 where masked) and the judge's
`preferences` `[P]`, the probability that each prompt's first sample beats its second. TRL
compares scalar rewards; a reward model's verdict here is the Bradley-Terry probability
sigmoid(r_1 - r_2), so `first >= second` is `preferences >= 0.5` and Nash-MD's probability is
the verdict itself, while a pairwise LLM judge gives the same kind of number without rewards.
`missing_eos_penalty` shifts rewards in TRL; on verdicts it shifts their log-odds by the same
amount (`penalise_missing_eos`), which is TRL's number for a reward model.

Row layout: `online_dpo` and `xpo` take the two samples of prompt p in rows 2p and 2p + 1 (for
`xpo` the second is the reference's sample); `nash_md` takes only the policy's sample of each
prompt (rows p), its opponent from the mixture policy entering through `preferences` alone.
Every loss returns one value per prompt, whose mean is TRL's loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from evalharness.errors import InputError

from . import dpo as dpo_family
from .options import check_range, describe
from .registry import register

Tensor = torch.Tensor

LOSS_TYPES = ("sigmoid", "ipo")


def online_loss_type(value: Any) -> str:
    """`loss_type` of online DPO / XPO: `sigmoid` or `ipo`, as TRL's `OnlineDPOConfig` takes.

    Their own conversion (`conversions` below), in place of `mixture`'s list of names that the
    option shares by name, so a config check rejects `hinge` before anything loads.
    """
    if value not in LOSS_TYPES:
        raise InputError(f"loss_type={value}: online_dpo and xpo take sigmoid or ipo")
    return str(value)


def _mixture_coef(value: Any) -> float:
    coef = float(value)
    if not 0.0 <= coef <= 1.0:
        raise InputError(f"mixture_coef={coef} must lie in [0, 1]")
    return coef


def _penalty(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


describe(
    "mixture_coef",
    "nash_md: the opponent samples from softmax(c·ref_logits + (1 − c)·policy_logits); "
    "0 = the policy itself, 1 = the reference (TRL's NashMDConfig)",
    _mixture_coef,
)
describe(
    "missing_eos_penalty",
    "online_dpo, xpo, nash_md, ppo: subtracted from the reward (a verdict's log-odds) of a "
    "sample that ends without EOS (before the pair is judged); null = off (TRL)",
    _penalty,
)

#: What `online_dpo` and `xpo` let the loop do outside the loss.
PAIR_LOOP_OPTIONS: dict[str, object] = {"missing_eos_penalty": None}


# --- pieces the loop applies ---------------------------------------------------------------------


def geometric_mixture_logits(
    policy_logits: Tensor, ref_logits: Tensor, mixture_coef: float
) -> Tensor:
    """Nash-MD's mixture policy: next-token log-probs of pi^(1-c) * pi_ref^c, renormalised.

    TRL's `GeometricMixtureWrapper.forward`: log_softmax(c * ref + (1 - c) * policy) over the
    raw logits (the normalisers of the two softmaxes cancel in the renormalisation), in the
    dtype of the inputs; sampling then applies the generation's temperature as usual.
    """
    return F.log_softmax(mixture_coef * ref_logits + (1 - mixture_coef) * policy_logits, dim=-1)


def penalise_missing_eos(
    preferences: Tensor, first_has_eos: Tensor, second_has_eos: Tensor, penalty: float | None
) -> Tensor:
    """P(first preferred) after subtracting `penalty` from the reward of each sample that
    ends without EOS: sigmoid(logit(P) - penalty * [first lacks EOS] + penalty * [second
    lacks EOS]).

    For a reward model's verdict P = sigmoid(r_1 - r_2) this is sigmoid of TRL's penalised
    reward difference; a certain verdict (0 or 1) stays certain.
    """
    if penalty is None:
        return preferences
    shift = penalty * ((~second_has_eos).to(preferences) - (~first_has_eos).to(preferences))
    return torch.sigmoid(torch.logit(preferences) + shift)


# --- the losses ----------------------------------------------------------------------------------


def _pair_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    """Rows 2p and 2p + 1 of `[2P, ...]` as two `[P, ...]` tensors (first, second samples)."""
    if values.shape[0] % 2:
        raise InputError(f"online pair losses take two samples per prompt; got {values.shape[0]}")
    return values[0::2], values[1::2]


def _sequence_sums(token_logps: Tensor, token_mask: Tensor) -> Tensor:
    """Sum of each row's completion-token log-probs, padding masked out as TRL does."""
    return (token_logps * token_mask.to(token_logps.dtype)).sum(dim=-1)


def judged_sums(
    token_logps: Tensor, ref_token_logps: Tensor, token_mask: Tensor, preferences: Tensor
) -> dict[str, Tensor]:
    """The DPO family's four sums for each prompt's pair, ordered by the verdict.

    The first sample is chosen where `preferences >= 0.5` (TRL: `first >= second`, so a tie
    goes to the first sample). The verdicts are compared where they are, in their own dtype
    (the loop's float64, which MPS devices lack), and only the outcome moves to the device.
    """
    first_policy, second_policy = _pair_rows(_sequence_sums(token_logps, token_mask))
    first_ref, second_ref = _pair_rows(_sequence_sums(ref_token_logps, token_mask))
    first_chosen = (preferences >= 0.5).to(token_logps.device)
    return {
        "policy_chosen_logps": torch.where(first_chosen, first_policy, second_policy),
        "policy_rejected_logps": torch.where(first_chosen, second_policy, first_policy),
        "ref_chosen_logps": torch.where(first_chosen, first_ref, second_ref),
        "ref_rejected_logps": torch.where(first_chosen, second_ref, first_ref),
    }


def pair_dpo_losses(sums: dict[str, Tensor], beta: float, loss_type: str) -> Tensor:
    """TRL's online `sigmoid` or `ipo` on the judged pair, by the offline family's own losses.

    `sigmoid` is `dpo` (no smoothing, no RPO term). TRL's online `ipo` squares the margin of
    the SUMS, (h - 1/(2β))², unlike its offline IPO which divides each log-ratio by its length:
    `ipo` with lengths of one is exactly that.
    """
    loss_type = online_loss_type(loss_type)
    ones = torch.ones_like(sums["policy_chosen_logps"])
    if loss_type == "sigmoid":
        return dpo_family.dpo(**sums, chosen_lengths=ones, beta=beta)
    check_range("beta", beta, 0.0, float("inf"), closed_low=False)
    return dpo_family.ipo(**sums, chosen_lengths=ones, rejected_lengths=ones, beta=beta)


@register(
    "online_dpo",
    data="prompt",
    reference=True,
    summary="Online DPO: two fresh samples per prompt, judged, then DPO (sigmoid) or IPO",
    loop_options=PAIR_LOOP_OPTIONS,
    conversions={"loss_type": online_loss_type},
)
def online_dpo(
    *,
    token_logps: Tensor,
    token_mask: Tensor,
    ref_token_logps: Tensor,
    preferences: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
) -> Tensor:
    """Online DPO (Guo et al. 2024, arXiv 2402.04792) as TRL's `OnlineDPOTrainer`: the pair of
    the policy's own samples ordered by the judge, then the offline DPO loss on its sums.

    Sampling fresh pairs from the current policy keeps the preference data on-policy, which is
    what the offline loss lacks once the policy drifts from the data's generator.
    """
    sums = judged_sums(token_logps, ref_token_logps, token_mask, preferences)
    return pair_dpo_losses(sums, beta, loss_type)


@register(
    "xpo",
    data="prompt",
    reference=True,
    summary="XPO: online DPO on (policy sample, reference sample) + α·log π(reference sample)",
    loop_options=PAIR_LOOP_OPTIONS,
    conversions={"loss_type": online_loss_type},
)
def xpo(
    *,
    token_logps: Tensor,
    token_mask: Tensor,
    ref_token_logps: Tensor,
    preferences: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    alpha: float = 1e-5,
) -> Tensor:
    """XPO (Xie et al. 2024, arXiv 2405.21046) as TRL's `XPOTrainer._compute_losses`.

    Rows 2p, 2p + 1 are the policy's and the reference's sample of prompt p, `preferences`
    the verdict on that pair; the loss is the online DPO loss on it plus α·log π(y_ref).
    Minimising the policy's likelihood of what the reference would say is the exploration
    bonus: it pushes the policy towards responses the reference rarely produces.
    """
    sums = judged_sums(token_logps, ref_token_logps, token_mask, preferences)
    _, on_reference_samples = _pair_rows(_sequence_sums(token_logps, token_mask))
    return pair_dpo_losses(sums, beta, loss_type) + alpha * on_reference_samples


@register(
    "nash_md",
    data="prompt",
    reference=True,
    summary="Nash-MD: policy sample vs geometric-mixture sample; REINFORCE on P(win) − ½ + β·KL",
    loop_options={"mixture_coef": 0.5, **PAIR_LOOP_OPTIONS},
)
def nash_md(
    *,
    token_logps: Tensor,
    token_mask: Tensor,
    ref_token_logps: Tensor,
    preferences: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """Nash-MD (Munos et al. 2024, arXiv 2312.00886) as TRL's `NashMDTrainer._compute_losses`.

    Rows are the policy's samples, `preferences` the probability that each beats the sample
    of the mixture policy (`geometric_mixture_logits`, `mixture_coef`). The loss is
    β·Σ_t sg(lp_t − lp_ref,t)·lp_t − (P − ½)·Σ_t lp_t: the second term raises the likelihood
    of samples that win more than half the time against the mixture (½ is the control
    variate), the first is the score-function gradient of KL(π ‖ π_ref) on π's own samples.
    """
    mask = token_mask.to(token_logps.dtype)
    logps = token_logps * mask
    log_ratio = (logps - ref_token_logps * mask).detach()
    probability = preferences.to(logps.dtype).to(logps.device)  # cast first: MPS lacks float64
    score = (probability - 0.5) * logps.sum(dim=-1)
    kl = (log_ratio * logps).sum(dim=-1)
    return beta * kl - score
