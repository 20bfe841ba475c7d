"""Pairwise preference losses: the DPO family, and the reference-free CPO, SimPO, ORPO, ASFT.

Every loss takes per-sequence SUMS of completion-token log-probs (`INPUTS`) and returns one loss
per example; the batch loss is their mean. Names and formulas follow TRL's `loss_type` values so
that a config moves between the two without surprises (`dpo` is TRL's `sigmoid`). TRL has moved
between releases, so each docstring names the release its formula was transcribed from:

- TRL 0.19.1 `DPOTrainer.dpo_loss`: `dpo` with `label_smoothing` (cDPO), `rpo_alpha` (RPO) and
  `bco_pair` with a running reward mean δ. TRL 1.x dropped all three (its `sigmoid` has no
  smoothing, its `bco_pair` has no δ); ε = 0, α = 0 and δ = 0 give those 1.x formulas back.
- TRL 1.16.0 `DPOTrainer._compute_loss`: every other DPO-family loss, `aot_unpaired` (0.19.1
  called it `aot_pair`) and `sigmoid_norm`; `experimental/cpo`, `experimental/orpo` for CPO,
  SimPO and ORPO. ASFT is not in TRL; its docstring names its source.
- TRL 1.x as in huggingface/trl's 2026 source (`trl/trainer/dpo_trainer.py`
  `DPOTrainer._compute_loss` and `compute_ref_log_probs`; `trl/experimental/cpo/cpo_trainer.py`
  `CPOTrainer.cpo_loss`), read from the code index, not from a tagged wheel: the f-divergence
  scores (`f_divergence_type`, `f_alpha_divergence_coef`), LD-DPO's `ld_alpha` (applied by the
  loop, see `trainers/inputs.py`), weighted mixtures (`mixture`: TRL's `loss_type` list with
  `loss_weights`) and AlphaPO's `alpha` in CPO and SimPO.

NLL terms under TRL's names (DPO's `rpo_alpha`, CPO's and SimPO's `cpo_alpha`, a mixture's
`sft`, ORPO's NLL) are TRL's batch token mean, NLL = −Σ_b lp_b / Σ_b n_b over the batch's chosen
rows: row b carries −lp_b·B/Σ n, so the batch mean is exactly TRL's cross-entropy (TRL instead
adds the scalar to every row; same mean, same gradient, a different per-row split). RPO, CPO,
SimPO and `sft` count the chosen completion tokens (TRL masks the prompt in their labels); ORPO
counts every chosen token after the first, prompt included (TRL's ORPO labels are the attended
input ids). The normalisation holds within one batch, as in TRL. ASFT is not TRL's: its NLL
stays its source's per-example mean, −lp(y_w)/|y_w|.

One convention differs from TRL on purpose:

- Reference-free methods that TRL feeds length-averaged log-probs (SimPO, ORPO, ASFT) and the two
  length-normalised losses (IPO, sigmoid_norm) receive sums and lengths and divide inside, so every
  method sees the same inputs. Lengths are clamped to ≥ 1 as TRL 1.16 does.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from evalharness.errors import InputError

from .registry import describe, register

Tensor = torch.Tensor


# --- shared pieces -------------------------------------------------------------------------------


def _mean_logps(logps: Tensor, lengths: Tensor) -> Tensor:
    """ℓ̄ = lp/|y|: per-token log-likelihood, so long and short responses score on one scale."""
    return logps / lengths.clamp(min=1.0)


def _chosen_nll(policy_chosen_logps: Tensor, chosen_lengths: Tensor) -> Tensor:
    """Each example's own mean token NLL, −lp_b/n_b: ASFT's SFT anchor (its source's form)."""
    return -_mean_logps(policy_chosen_logps, chosen_lengths)


def _batch_token_nll(logps: Tensor, lengths: Tensor) -> Tensor:
    """Rows −lp_b·B/Σ_c n_c, whose mean is TRL's NLL −Σ_b lp_b/Σ_b n_b over the batch's tokens.

    TRL computes its NLL terms as one `cross_entropy` over every scored chosen token of the
    batch, so a long answer weighs in proportion to its length; a mean of per-example means
    (−lp_b/n_b) would weigh every answer alike and differs whenever the lengths do. The total
    is clamped to ≥ 1 so an empty batch gives 0, not NaN.
    """
    return -logps * (logps.shape[0] / lengths.sum().clamp(min=1.0))


def _smoothed_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the Bradley–Terry NLL with labels flipped w.p. ε (cDPO)."""
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0, switching form at −log 2 so neither branch cancels (Mächler 2012)."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _log_odds(mean_logps: Tensor) -> Tensor:
    """log(P/(1−P)) with P = exp(ℓ̄): the odds score ORPO and ASFT put through the sigmoid."""
    return mean_logps - _log1mexp(mean_logps)


def _check_range(name: str, value: float, low: float, high: float, *, closed_low: bool) -> None:
    """Reject a hyperparameter outside the interval where its loss is defined (not a silent NaN)."""
    above_low = value >= low if closed_low else value > low
    if not (above_low and value < high):
        bracket = "[" if closed_low else "("
        raise InputError(f"{name}={value} must lie in {bracket}{low}, {high})")


# --- f-divergence scores (TRL 1.x) ---------------------------------------------------------------

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def _f_divergence_type(value: Any) -> str:
    """A user's `f_divergence_type`, checked against TRL's four names."""
    if value not in F_DIVERGENCES:
        raise InputError(f"f_divergence_type={value!r} must be one of {', '.join(F_DIVERGENCES)}")
    return str(value)


describe(
    "f_divergence_type",
    "DPO family: score s(r) per response, r = lp − lp_ref: reverse_kl r (DPO) | forward_kl "
    "−e^(−r) | js_divergence log σ(r) | alpha_divergence e^((α−1)r)/(α−1)",
    _f_divergence_type,
)
describe(
    "f_alpha_divergence_coef",
    "α of alpha_divergence (TRL 1.x: 1 = reverse_kl, 0 = forward_kl; TRL 0.19's coefficient "
    "is 1 − α)",
)


def _f_score(logratios: Tensor, f_divergence_type: str, coef: float) -> Tensor:
    """One response's score f'(u) (constants dropped) of the log-ratio r = log u = lp − lp_ref.

    Transcribed from TRL 1.x `DPOTrainer._compute_loss` (huggingface/trl 2026 source):
    reverse_kl r; forward_kl −e^(−r) (f'(u) = 1 − 1/u); js_divergence log σ(r)
    (f'(u) = log(2u/(1+u))); alpha_divergence e^((α−1)r)/(α−1) (f'(u) = (u^(α−1) − 1)/(α−1)),
    reverse_kl when |α − 1| < 1e-6, the exponent clamped at 80 (11 in float16) and computed in
    at least float32 as TRL does. TRL 0.19 wrote the alpha case as (1 − u^(−a))/a with its own
    coefficient a = 1 − α: its default a = 1 was forward KL, TRL 1.x's default α = 1 is
    reverse KL. forward_kl is e^(−r) unclamped, as in TRL: a very negative log-ratio overflows.
    """
    f_divergence_type = _f_divergence_type(f_divergence_type)
    if f_divergence_type == "reverse_kl":
        return logratios
    if f_divergence_type == "forward_kl":
        return -torch.exp(-logratios)
    if f_divergence_type == "js_divergence":
        return F.logsigmoid(logratios)
    if abs(coef - 1.0) < 1e-6:
        return logratios
    exponent = (coef - 1.0) * logratios
    cap = 11.0 if exponent.dtype == torch.float16 else 80.0
    wide = torch.promote_types(exponent.dtype, torch.float32)
    return torch.exp(exponent.to(wide).clamp(max=cap)).to(exponent.dtype) * (1.0 / (coef - 1.0))


def _scores(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> tuple[Tensor, Tensor]:
    """(s_w, s_l) = (f'(u_w), f'(u_l)): TRL 1.x's `chosen_scores` and `rejected_scores`.

    With reverse_kl they are the log-ratios r = lp − lp_ref and s_w − s_l is the implicit-reward
    margin h = r_w − r_l that every DPO-family loss scores.
    """
    chosen = _f_score(
        policy_chosen_logps - ref_chosen_logps, f_divergence_type, f_alpha_divergence_coef
    )
    rejected = _f_score(
        policy_rejected_logps - ref_rejected_logps, f_divergence_type, f_alpha_divergence_coef
    )
    return chosen, rejected


# --- DPO family (with reference) -----------------------------------------------------------------


@register(
    "dpo",
    data="pairwise",
    reference=True,
    summary="DPO −log σ(β h); label_smoothing = cDPO; rpo_alpha adds α·NLL(chosen) (RPO)",
)
def dpo(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    policy_chosen_nll_logps: Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    rpo_alpha: float = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL 0.19.1 `sigmoid`: −(1−ε) log σ(βh) − ε log σ(−βh) + α·NLL(y_w).

    h = (lp_w − lp_ref,w) − (lp_l − lp_ref,l). ε > 0 is conservative DPO, for labels believed to
    be flipped with probability ε. α > 0 is RPO (TRL's `rpo_alpha`, paper value 1.0): the NLL term
    keeps the chosen likelihood from falling while the margin grows. As TRL's `nll_loss` it is
    the token mean over the batch's chosen completions, NLL = −Σ_b lp_w,b / Σ_b |y_w,b| (row b
    carries −lp_w,b·B/Σ|y_w|); this is also TRL 1.x's `sft` term of a `["sigmoid", "sft"]`
    mixture. `chosen_lengths` is only used by that term; under LD-DPO (`ld_alpha`) it reads the
    unweighted sums `policy_chosen_nll_logps`, as TRL's cross-entropy reads the logits.

    `f_divergence_type` ≠ reverse_kl replaces h by s_w − s_l, TRL 1.x's f-divergence scores
    (`_f_score`); TRL 0.19.1 applied the same js_divergence and (reparametrised) alpha cases.
    """
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    losses = _smoothed_logistic(beta * (chosen - rejected), label_smoothing)
    if rpo_alpha:
        nll_logps = (
            policy_chosen_logps if policy_chosen_nll_logps is None else policy_chosen_nll_logps
        )
        losses = losses + rpo_alpha * _batch_token_nll(nll_logps, chosen_lengths)
    return losses


@register(
    "robust",
    data="pairwise",
    reference=True,
    summary="Robust DPO: unbiased under labels flipped with probability ε (label_smoothing)",
)
def robust(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL `robust`: (−(1−ε) log σ(βh) + ε log σ(−βh)) / (1 − 2ε).

    Unlike cDPO this corrects the expected loss for noisy labels instead of smoothing it, so
    ε must stay below ½ (the divisor). ε = 0 is plain DPO; the paper's typical ε is 0.1.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`).
    """
    _check_range("label_smoothing", label_smoothing, 0.0, 0.5, closed_low=True)
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    z = beta * (chosen - rejected)
    clean = -(1 - label_smoothing) * F.logsigmoid(z)
    flipped = -label_smoothing * F.logsigmoid(-z)
    return (clean - flipped) / (1 - 2 * label_smoothing)


@register("hinge", data="pairwise", reference=True, summary="SLiC hinge max(0, 1 − β h)")
def hinge(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL `hinge`: relu(1 − βh); zero gradient once the margin exceeds 1/β, unlike DPO.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`)."""
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    return torch.relu(1 - beta * (chosen - rejected))


@register(
    "ipo",
    data="pairwise",
    reference=True,
    summary="IPO (h̄ − 1/(2β))² on length-averaged log-ratios (as TRL)",
)
def ipo(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL 1.16 `ipo`: (r_w/|y_w| − r_l/|y_l| − 1/(2β))², β being the paper's τ.

    The squared loss targets a fixed margin, so with token sums the target would mean different
    things for long and short answers; TRL divides each log-ratio by its completion length
    (confirmed with the IPO authors, per its comment) and so does this, from the sums given.
    With an f-divergence, TRL 1.x divides the scores s instead of r, and so does this.
    """
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    chosen = _mean_logps(chosen, chosen_lengths)
    rejected = _mean_logps(rejected, rejected_lengths)
    return (chosen - rejected - 1 / (2 * beta)) ** 2


@register(
    "exo_pair",
    data="pairwise",
    reference=True,
    summary="EXO: reverse KL to the ε-smoothed preference label (label_smoothing, default 1e-3)",
)
def exo_pair(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 1e-3,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL `exo_pair` (EXO eq. 16): KL(q ‖ p) with q = σ(±βh), p = (1−ε, ε).

    Reverse KL is mode-seeking, which is EXO's point. ε must be in (0, 1) because log ε appears:
    TRL 1.16 rejects 0 and recommends 1e-3 (0.19 silently replaced 0 by 1e-3), hence the default.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`).
    """
    _check_range("label_smoothing", label_smoothing, 0.0, 1.0, closed_low=False)
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    z = beta * (chosen - rejected)
    chosen_term = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-label_smoothing))
    rejected_term = torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(label_smoothing))
    return chosen_term + rejected_term


@register(
    "nca_pair",
    data="pairwise",
    reference=True,
    summary="NCA: −log σ(βr_w) − ½ log σ(−βr_w) − ½ log σ(−βr_l) on absolute rewards",
)
def nca_pair(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL `nca_pair`: scores each response's own reward, so the chosen likelihood cannot sink
    while the margin grows (DPO only sees the difference). Rewards are β·s with an
    f-divergence (TRL 1.x)."""
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    chosen, rejected = beta * chosen, beta * rejected
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


@register(
    "bco_pair",
    data="pairwise",
    reference=True,
    summary="BCO on pairs: −log σ(βr_w − δ) − log σ(−(βr_l − δ)), δ the loop's running reward mean",
)
def bco_pair(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    delta: Tensor,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL 0.19.1 `bco_pair`: each response classified good/bad around the reward baseline δ.

    δ is a batch-spanning state, so the loop keeps it (an input, not a hyperparameter). To match
    TRL, at every step the loop first folds in this batch's detached mean m = mean(β·[r_w ; r_l])
    as ONE value (TRL's `RunningMoments.update` on that scalar: δ ← δ + (m − δ)/(count + 1)), so
    δ is the plain mean of the per-step means and a short last batch weighs as much as a full
    one. Under DDP each process contributes its own m (TRL's `get_global_statistics` sums values
    and counts across processes), so a step adds one value per process. TRL updates δ BEFORE
    computing the loss, so the current batch is already inside its δ; evaluation reads δ
    without updating it. δ = 0 gives TRL 1.x's `bco_pair`, which dropped the running mean.
    An f-divergence replaces β·r by β·s (TRL 1.x, where δ = 0); δ stays the mean of β·r.
    """
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    chosen, rejected = beta * chosen, beta * rejected
    return -F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta))


@register(
    "sppo_hard",
    data="pairwise",
    reference=True,
    summary="SPPO with hard labels: (r_w − 1/(2β))² + (r_l + 1/(2β))²",
)
def sppo_hard(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL `sppo_hard`: SPPO eq. 4.7 with win probability 1/0 in place of a PairRM estimate,
    regressing each log-ratio (with an f-divergence: each score s, TRL 1.x) to ±1/(2β)."""
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    return (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2


@register(
    "aot",
    data="pairwise",
    reference=True,
    summary="AOT (paired): logistic loss on batch-sorted policy vs reference log-ratio quantiles",
)
def aot(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Tensor:
    """TRL `aot`: sort (lp_w − lp_l) and (ref_w − ref_l) over the batch, compare by rank.

    Distributional alignment: the policy's margin distribution should dominate the reference's
    quantile by quantile, which is why it needs a batch. Output element k is the loss of the k-th
    sorted position, NOT of input row k; only the mean is meaningful per row.
    """
    policy_sorted, _ = torch.sort(policy_chosen_logps - policy_rejected_logps, dim=0)
    ref_sorted, _ = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0)
    return _smoothed_logistic(beta * (policy_sorted - ref_sorted), label_smoothing)


@register(
    "aot_unpaired",
    data="pairwise",
    reference=True,
    summary="AOT (unpaired): logistic loss on batch-sorted chosen vs rejected log-ratio quantiles",
)
def aot_unpaired(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Tensor:
    """TRL 1.16 `aot_unpaired` (0.19's `aot_pair`): sort r_w and r_l separately, compare by rank.

    For data whose chosen and rejected sets are not truly paired: the chosen reward distribution
    should dominate the rejected one. Output element k belongs to sorted position k, not to row k.
    """
    chosen_sorted, _ = torch.sort(policy_chosen_logps - ref_chosen_logps, dim=0)
    rejected_sorted, _ = torch.sort(policy_rejected_logps - ref_rejected_logps, dim=0)
    return _smoothed_logistic(beta * (chosen_sorted - rejected_sorted), label_smoothing)


@register(
    "apo_zero",
    data="pairwise",
    reference=True,
    summary="APO-zero: (1 − σ(βr_w)) + σ(βr_l), chosen up and rejected down",
)
def apo_zero(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """TRL `apo_zero` (APO eq. 7): for chosen answers better than the model's own outputs."""
    chosen = torch.sigmoid(beta * (policy_chosen_logps - ref_chosen_logps))
    rejected = torch.sigmoid(beta * (policy_rejected_logps - ref_rejected_logps))
    return (1 - chosen) + rejected


@register(
    "apo_down",
    data="pairwise",
    reference=True,
    summary="APO-down: σ(βr_w) + (1 − σ(βh)), both down, rejected more",
)
def apo_down(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL `apo_down` (APO eq. 8): for chosen answers worse than the model's own outputs, so even
    the chosen likelihood is pushed down while the margin still grows. As in TRL 1.x an
    f-divergence changes only the margin term (h → s_w − s_l), not σ(βr_w)."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    return torch.sigmoid(beta * chosen_logratios) + (1 - torch.sigmoid(beta * (chosen - rejected)))


@register(
    "discopop",
    data="pairwise",
    reference=True,
    summary="DiscoPOP: logistic/exponential blend modulated by σ(βh/τ)",
)
def discopop(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    tau: float = 0.05,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL `discopop` (eq. 5): (1 − σ(z/τ))·(−log σ(z)) + σ(z/τ)·e^(−z), z = βh.

    `tau` is TRL's `discopop_tau` (paper default 0.05). The loss was found by LLM-driven search
    and is not monotone in the margin near 0; that is the published shape, kept as is.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`).
    """
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    z = beta * (chosen - rejected)
    modulation = torch.sigmoid(z / tau)
    return -F.logsigmoid(z) * (1 - modulation) + torch.exp(-z) * modulation


@register(
    "sigmoid_norm",
    data="pairwise",
    reference=True,
    summary="Length-normalised DPO −log σ(β(r_w/|y_w| − r_l/|y_l|))",
)
def sigmoid_norm(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> Tensor:
    """TRL 1.16 `sigmoid_norm`: DPO on per-token log-ratios, so a longer answer earns no larger
    implicit reward just by having more tokens (the length exploit of summed DPO). With an
    f-divergence the scores s are divided by the lengths instead (TRL)."""
    chosen, rejected = _scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    chosen = _mean_logps(chosen, chosen_lengths)
    rejected = _mean_logps(rejected, rejected_lengths)
    return -F.logsigmoid(beta * (chosen - rejected))


# --- weighted mixtures (TRL's `loss_type` list) --------------------------------------------------

#: TRL's `loss_type` names a mixture may combine, with the loss each one is here; `sft` (the NLL
#: on chosen completion tokens) is computed by `mixture` itself.
MIXABLE: dict[str, Callable[..., Tensor] | None] = {
    "sigmoid": dpo,
    "hinge": hinge,
    "ipo": ipo,
    "exo_pair": exo_pair,
    "nca_pair": nca_pair,
    "robust": robust,
    "bco_pair": bco_pair,
    "sppo_hard": sppo_hard,
    "aot": aot,
    "aot_unpaired": aot_unpaired,
    "apo_zero": apo_zero,
    "apo_down": apo_down,
    "discopop": discopop,
    "sigmoid_norm": sigmoid_norm,
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
    "MPO: sigmoid,bco_pair,sft)",
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
    nll_logps = policy_chosen_logps if policy_chosen_nll_logps is None else policy_chosen_nll_logps
    total = torch.zeros_like(policy_chosen_logps)
    for name, weight in zip(names, weights, strict=True):
        loss = MIXABLE[name]
        if loss is None:
            part = _batch_token_nll(nll_logps, chosen_lengths)
        else:
            wanted = inspect.signature(loss).parameters
            part = loss(**{key: value for key, value in available.items() if key in wanted})
        total = total + weight * part
    return total


# --- reference-free ------------------------------------------------------------------------------

describe(
    "alpha",
    "cpo, simpo: AlphaPO reward (1 − e^(−α·lp))/α in place of lp (simpo: of ℓ̄); 0 = off",
)
describe(
    "cpo_alpha",
    "cpo, simpo: weight of the NLL on chosen completion tokens (TRL's name; `alpha` here before)",
)


def _alphapo_rewards(logps: Tensor, alpha: float) -> Tensor:
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
    chosen = _alphapo_rewards(policy_chosen_logps, alpha)
    rejected = _alphapo_rewards(policy_rejected_logps, alpha)
    nll = _batch_token_nll(policy_chosen_logps, chosen_lengths)
    return _smoothed_logistic(beta * (chosen - rejected), label_smoothing) + cpo_alpha * nll


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
    chosen = _alphapo_rewards(_mean_logps(policy_chosen_logps, chosen_lengths), alpha)
    rejected = _alphapo_rewards(_mean_logps(policy_rejected_logps, rejected_lengths), alpha)
    losses = _smoothed_logistic(beta * (chosen - rejected) - gamma, label_smoothing)
    if cpo_alpha:
        losses = losses + cpo_alpha * _batch_token_nll(policy_chosen_logps, chosen_lengths)
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
    chosen = _mean_logps(policy_chosen_logps, chosen_lengths)
    rejected = _mean_logps(policy_rejected_logps, rejected_lengths)
    odds_ratio = F.logsigmoid(_log_odds(chosen) - _log_odds(rejected))
    nll = _batch_token_nll(policy_chosen_full_logps, chosen_full_lengths)
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
    chosen = _mean_logps(policy_chosen_logps, chosen_lengths)
    rejected = _mean_logps(policy_rejected_logps, rejected_lengths)
    pointwise = -F.logsigmoid(beta * _log_odds(chosen)) - F.logsigmoid(-beta * _log_odds(rejected))
    return nll_weight * -chosen + lam * pointwise
