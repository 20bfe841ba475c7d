"""The DPO family: pairwise preference losses scored against a frozen reference.

Every loss here reads the same four per-sequence SUMS of completion-token log-probs (policy and
reference, chosen and rejected) and, with TRL 1.x, one response score each: the log-ratio
r = lp − lp_ref, or f'(u) of an f-divergence (`f_divergence_type`). `family_loss` does that
shared part once (the inputs, the scores, the f-divergence options, range checks), so each loss
below is a short function of the two scores (s_w, s_l) and of the options and extra inputs it
names. Names and formulas follow TRL's `loss_type` values so that a config moves between the
two without surprises (`dpo` is TRL's `sigmoid`). TRL has moved between releases, so each
docstring names the release its formula was transcribed from:

- TRL 0.19.1 `DPOTrainer.dpo_loss`: `dpo` with `label_smoothing` (cDPO), `rpo_alpha` (RPO) and
  `bco_pair` with a running reward mean δ. TRL 1.x dropped all three (its `sigmoid` has no
  smoothing, its `bco_pair` has no δ); ε = 0, α = 0 and δ = 0 give those 1.x formulas back.
- TRL 1.16.0 `DPOTrainer._compute_loss`: every other loss here, `aot_unpaired` (0.19.1 called
  it `aot_pair`) and `sigmoid_norm`.
- TRL 1.x as in huggingface/trl's 2026 source (`trl/trainer/dpo_trainer.py`
  `DPOTrainer._compute_loss` and `compute_ref_log_probs`), read from the code index, not from a
  tagged wheel: the f-divergence scores (`f_divergence_type`, `f_alpha_divergence_coef`) and
  LD-DPO's `ld_alpha` (applied by the loop, see `trainers/inputs.py`).

RPO's NLL term (`rpo_alpha`) is TRL's batch token mean over the chosen completion tokens
(`scoring.batch_token_nll`). IPO and sigmoid_norm are length-normalised: they receive sums and
lengths and divide inside, so every method sees the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from evalharness.errors import InputError

from .family import REQUIRED, member
from .options import check_range, describe
from .registry import register
from .scoring import batch_token_nll, mean_logps, smoothed_logistic

Tensor = torch.Tensor

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


def f_score(logratios: Tensor, f_divergence_type: str, coef: float) -> Tensor:
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


def pair_scores(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """(s_w, s_l) = (f'(u_w), f'(u_l)): TRL 1.x's `chosen_scores` and `rejected_scores`.

    With reverse_kl they are the log-ratios r = lp − lp_ref and s_w − s_l is the implicit-reward
    margin h = r_w − r_l that every DPO-family loss scores.
    """
    chosen = f_score(
        policy_chosen_logps - ref_chosen_logps, f_divergence_type, f_alpha_divergence_coef
    )
    rejected = f_score(
        policy_rejected_logps - ref_rejected_logps, f_divergence_type, f_alpha_divergence_coef
    )
    return chosen, rejected


# --- what every DPO-family loss shares -----------------------------------------------------------

#: The per-sequence sums every DPO-family loss reads, first in its signature.
PAIR_INPUTS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "ref_chosen_logps",
    "ref_rejected_logps",
)
#: TRL 1.x's f-divergence options with their defaults, last in a scored loss's signature.
F_DIVERGENCE_OPTIONS = {"f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 1.0}

#: A range a hyperparameter must lie in: (low, high, whether low itself is allowed).
Range = tuple[float, float, bool]


def family_loss(
    name: str,
    *,
    summary: str,
    f_divergence: bool = True,
    per_token: bool = False,
    ranges: dict[str, Range] | None = None,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register `score(s_w, s_l, /, *, <inputs>, <options>)` as the DPO-family loss `name`.

    The registered loss is keyword-only, as the registry wants (`family.member`): the four sums
    of `PAIR_INPUTS`, then the other inputs `score` names (lengths, δ, ...), its options with
    their defaults and, with `f_divergence`, TRL 1.x's f-divergence options. Called, it checks
    the `ranges` (before any arithmetic, so a bad value is an InputError rather than a NaN),
    computes each response's log-ratio r = lp − lp_ref and its score s = f'(u) (s = r without
    `f_divergence`), with `per_token` divides each score by its completion length (taking
    `chosen_lengths` and `rejected_lengths`, as TRL's IPO and sigmoid_norm do), and returns
    `score(s_w, s_l, ...)`. The registry and `evalharness methods` read that signature, so each
    loss declares only what is its own.
    """

    def prepare(arguments: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        for option, (low, high, closed_low) in (ranges or {}).items():
            check_range(option, arguments[option], low, high, closed_low=closed_low)
        chosen, rejected = pair_scores(
            *(arguments[n] for n in PAIR_INPUTS),
            *(arguments[n] for n in F_DIVERGENCE_OPTIONS if f_divergence),
        )
        if per_token:
            chosen = mean_logps(chosen, arguments["chosen_lengths"])
            rejected = mean_logps(rejected, arguments["rejected_lengths"])
        return chosen, rejected

    def wrap(score: Callable[..., Tensor]) -> Callable[..., Tensor]:
        lengths = ("chosen_lengths", "rejected_lengths") if per_token else ()
        loss = member(
            score,
            inputs=dict.fromkeys((*PAIR_INPUTS, *lengths), REQUIRED),
            prepare=prepare,
            options=F_DIVERGENCE_OPTIONS if f_divergence else None,
        )
        return register(name, data="pairwise", reference=True, summary=summary)(loss)

    return wrap


def chosen_nll(
    policy_chosen_logps: Tensor, chosen_lengths: Tensor, policy_chosen_nll_logps: Tensor | None
) -> Tensor:
    """TRL's NLL on the chosen completion tokens, rows of `batch_token_nll`; under LD-DPO
    (`ld_alpha`) from the unweighted sums `policy_chosen_nll_logps`, as TRL's cross-entropy
    reads the logits rather than the weighted sums."""
    logps = policy_chosen_logps if policy_chosen_nll_logps is None else policy_chosen_nll_logps
    return batch_token_nll(logps, chosen_lengths)


# --- the losses ----------------------------------------------------------------------------------


@family_loss(
    "dpo", summary="DPO −log σ(β h); label_smoothing = cDPO; rpo_alpha adds α·NLL(chosen) (RPO)"
)
def dpo(
    chosen: Tensor,
    rejected: Tensor,
    /,
    *,
    policy_chosen_logps: Tensor,
    chosen_lengths: Tensor,
    policy_chosen_nll_logps: Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    rpo_alpha: float = 0.0,
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
    (`f_score`); TRL 0.19.1 applied the same js_divergence and (reparametrised) alpha cases.
    """
    losses = smoothed_logistic(beta * (chosen - rejected), label_smoothing)
    if rpo_alpha:
        nll = chosen_nll(policy_chosen_logps, chosen_lengths, policy_chosen_nll_logps)
        losses = losses + rpo_alpha * nll
    return losses


@family_loss(
    "robust",
    summary="Robust DPO: unbiased under labels flipped with probability ε (label_smoothing)",
    ranges={"label_smoothing": (0.0, 0.5, True)},
)
def robust(
    chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1, label_smoothing: float = 0.0
) -> Tensor:
    """TRL `robust`: (−(1−ε) log σ(βh) + ε log σ(−βh)) / (1 − 2ε).

    Unlike cDPO this corrects the expected loss for noisy labels instead of smoothing it, so
    ε must stay below ½ (the divisor). ε = 0 is plain DPO; the paper's typical ε is 0.1.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`).
    """
    z = beta * (chosen - rejected)
    clean = -(1 - label_smoothing) * F.logsigmoid(z)
    flipped = -label_smoothing * F.logsigmoid(-z)
    return (clean - flipped) / (1 - 2 * label_smoothing)


@family_loss("hinge", summary="SLiC hinge max(0, 1 − β h)")
def hinge(chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1) -> Tensor:
    """TRL `hinge`: relu(1 − βh); zero gradient once the margin exceeds 1/β, unlike DPO.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`)."""
    return torch.relu(1 - beta * (chosen - rejected))


@family_loss(
    "ipo", summary="IPO (h̄ − 1/(2β))² on length-averaged log-ratios (as TRL)", per_token=True
)
def ipo(chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1) -> Tensor:
    """TRL 1.16 `ipo`: (r_w/|y_w| − r_l/|y_l| − 1/(2β))², β being the paper's τ.

    The squared loss targets a fixed margin, so with token sums the target would mean different
    things for long and short answers; TRL divides each log-ratio by its completion length
    (confirmed with the IPO authors, per its comment) and so does this, from the sums given.
    With an f-divergence, TRL 1.x divides the scores s instead of r, and so does this.
    """
    return (chosen - rejected - 1 / (2 * beta)) ** 2


@family_loss(
    "exo_pair",
    summary="EXO: reverse KL to the ε-smoothed preference label (label_smoothing, default 1e-3)",
    ranges={"label_smoothing": (0.0, 1.0, False)},
)
def exo_pair(
    chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1, label_smoothing: float = 1e-3
) -> Tensor:
    """TRL `exo_pair` (EXO eq. 16): KL(q ‖ p) with q = σ(±βh), p = (1−ε, ε).

    Reverse KL is mode-seeking, which is EXO's point. ε must be in (0, 1) because log ε appears:
    TRL 1.16 rejects 0 and recommends 1e-3 (0.19 silently replaced 0 by 1e-3), hence the default.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`).
    """
    z = beta * (chosen - rejected)
    chosen_term = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-label_smoothing))
    rejected_term = torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(label_smoothing))
    return chosen_term + rejected_term


@family_loss(
    "nca_pair",
    summary="NCA: −log σ(βr_w) − ½ log σ(−βr_w) − ½ log σ(−βr_l) on absolute rewards",
)
def nca_pair(chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1) -> Tensor:
    """TRL `nca_pair`: scores each response's own reward, so the chosen likelihood cannot sink
    while the margin grows (DPO only sees the difference). Rewards are β·s with an
    f-divergence (TRL 1.x)."""
    chosen, rejected = beta * chosen, beta * rejected
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


@family_loss(
    "bco_pair",
    summary="BCO on pairs: −log σ(βr_w − δ) − log σ(−(βr_l − δ)), δ the loop's running reward mean",
)
def bco_pair(chosen: Tensor, rejected: Tensor, /, *, delta: Tensor, beta: float = 0.1) -> Tensor:
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
    chosen, rejected = beta * chosen, beta * rejected
    return -F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta))


@family_loss("sppo_hard", summary="SPPO with hard labels: (r_w − 1/(2β))² + (r_l + 1/(2β))²")
def sppo_hard(chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1) -> Tensor:
    """TRL `sppo_hard`: SPPO eq. 4.7 with win probability 1/0 in place of a PairRM estimate,
    regressing each log-ratio (with an f-divergence: each score s, TRL 1.x) to ±1/(2β)."""
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
    sorted position, NOT of input row k; only the mean is meaningful per row. It compares the
    policy's and the reference's margins, not per-response scores, so it is registered on its
    own rather than through `family_loss`, and takes no f-divergence (nor does TRL).
    """
    policy_sorted, _ = torch.sort(policy_chosen_logps - policy_rejected_logps, dim=0)
    ref_sorted, _ = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0)
    return smoothed_logistic(beta * (policy_sorted - ref_sorted), label_smoothing)


@family_loss(
    "aot_unpaired",
    summary="AOT (unpaired): logistic loss on batch-sorted chosen vs rejected log-ratio quantiles",
    f_divergence=False,
)
def aot_unpaired(
    chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1, label_smoothing: float = 0.0
) -> Tensor:
    """TRL 1.16 `aot_unpaired` (0.19's `aot_pair`): sort r_w and r_l separately, compare by rank.

    For data whose chosen and rejected sets are not truly paired: the chosen reward distribution
    should dominate the rejected one. Output element k belongs to sorted position k, not to row k.
    """
    chosen_sorted, _ = torch.sort(chosen, dim=0)
    rejected_sorted, _ = torch.sort(rejected, dim=0)
    return smoothed_logistic(beta * (chosen_sorted - rejected_sorted), label_smoothing)


@family_loss(
    "apo_zero",
    summary="APO-zero: (1 − σ(βr_w)) + σ(βr_l), chosen up and rejected down",
    f_divergence=False,
)
def apo_zero(chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1) -> Tensor:
    """TRL `apo_zero` (APO eq. 7): for chosen answers better than the model's own outputs."""
    return (1 - torch.sigmoid(beta * chosen)) + torch.sigmoid(beta * rejected)


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
    f-divergence changes only the margin term (h → s_w − s_l), not σ(βr_w); reading the raw
    log-ratio as well as the scores, it is registered on its own rather than by `family_loss`.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    chosen, rejected = pair_scores(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        f_divergence_type,
        f_alpha_divergence_coef,
    )
    return torch.sigmoid(beta * chosen_logratios) + (1 - torch.sigmoid(beta * (chosen - rejected)))


@family_loss("discopop", summary="DiscoPOP: logistic/exponential blend modulated by σ(βh/τ)")
def discopop(
    chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1, tau: float = 0.05
) -> Tensor:
    """TRL `discopop` (eq. 5): (1 − σ(z/τ))·(−log σ(z)) + σ(z/τ)·e^(−z), z = βh.

    `tau` is TRL's `discopop_tau` (paper default 0.05). The loss was found by LLM-driven search
    and is not monotone in the margin near 0; that is the published shape, kept as is.
    With an f-divergence, h is s_w − s_l (TRL 1.x `delta_score`).
    """
    z = beta * (chosen - rejected)
    modulation = torch.sigmoid(z / tau)
    return -F.logsigmoid(z) * (1 - modulation) + torch.exp(-z) * modulation


@family_loss(
    "sigmoid_norm",
    summary="Length-normalised DPO −log σ(β(r_w/|y_w| − r_l/|y_l|))",
    per_token=True,
)
def sigmoid_norm(chosen: Tensor, rejected: Tensor, /, *, beta: float = 0.1) -> Tensor:
    """TRL 1.16 `sigmoid_norm`: DPO on per-token log-ratios, so a longer answer earns no larger
    implicit reward just by having more tokens (the length exploit of summed DPO). With an
    f-divergence the scores s are divided by the lengths instead (TRL)."""
    return -F.logsigmoid(beta * (chosen - rejected))
