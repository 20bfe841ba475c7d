"""Pieces every pairwise loss scores with: per-token means, TRL's batch NLL, the logistic term.

The DPO family (`dpo`), its mixtures (`mixture`), the reference-free family (`reference_free`)
and PoFT (`supervised`) all receive per-sequence SUMS of log-probs with token counts, and turn
them into the same few quantities; they live here once so that every loss computes them with
the same operations in the same order (the tests compare losses with TRL bit for bit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def mean_logps(logps: Tensor, lengths: Tensor) -> Tensor:
    """ℓ̄ = lp/|y|: per-token log-likelihood, so long and short responses score on one scale.

    Lengths are clamped to ≥ 1 as TRL 1.16 does, so an empty completion does not divide by 0.
    """
    return logps / lengths.clamp(min=1.0)


def batch_token_nll(logps: Tensor, lengths: Tensor) -> Tensor:
    """Rows −lp_b·B/Σ_c n_c, whose mean is TRL's NLL −Σ_b lp_b/Σ_b n_b over the batch's tokens.

    TRL computes its NLL terms as one `cross_entropy` over every scored chosen token of the
    batch, so a long answer weighs in proportion to its length; a mean of per-example means
    (−lp_b/n_b) would weigh every answer alike and differs whenever the lengths do. The total
    is clamped to ≥ 1 so an empty batch gives 0, not NaN.
    """
    return -logps * (logps.shape[0] / lengths.sum().clamp(min=1.0))


def smoothed_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the Bradley–Terry NLL with labels flipped w.p. ε (cDPO)."""
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
