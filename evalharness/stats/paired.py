"""Paired tests for two runs scored on the same samples.

Pairing removes the between-sample variance that dominates benchmark scores, so a paired test
detects a regression that two independent confidence intervals would both contain. The tests:
McNemar's exact test for 0/1 outcomes, Wilcoxon's signed-rank test for ratings and other
numbers, and a Student t CI of the difference in means over samples (a sample's units, e.g.
MT-Bench's two turns, count as one cluster because they are not independent). Which test runs
on which values, one per unit or one per sample, is `compare`'s choice.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, wilcoxon

from evalharness.stats.intervals import NEWCOMBE_PAIRED, T_CLUSTERED, clustered_t, wilson_interval


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts (1.0 with none)."""
    if lost + gained == 0:
        return 1.0
    return float(binomtest(lost, lost + gained, 0.5).pvalue)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided signed-rank p-value; zero differences are dropped (1.0 when all are zero)."""
    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        return 1.0
    # The exact null distribution is only valid without tied magnitudes; with ties scipy would
    # fall back to a permutation test, which is slow for the many small per-task comparisons a
    # report makes. The normal approximation with tie correction is the textbook choice there.
    magnitudes = np.abs(nonzero)
    tied = np.unique(magnitudes).size < magnitudes.size
    method = "exact" if not tied and nonzero.size <= 50 else "asymptotic"
    return float(
        wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method=method).pvalue
    )


#: How `delta_ci` and `paired_rate_delta_ci` make their intervals (compare's `ci_method`).
DELTA_CI_METHOD = T_CLUSTERED
RATE_DELTA_CI_METHOD = NEWCOMBE_PAIRED


def delta_ci(
    difference_sums: np.ndarray,
    unit_counts: np.ndarray,
    *,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Student t CI of sum(differences) / sum(units) over samples (`stats.clustered_t`).

    `difference_sums[i]` is the sum over sample i's units of (B - A); `unit_counts[i]` how many
    units it has. With one unit per sample this is the paired t interval. A percentile
    bootstrap here excluded 0 in 9.5% of identical-model comparisons at 10 questions (nominal
    5%): too narrow at the sample sizes of a quick gate. None with fewer than two samples.
    """
    if np.asarray(difference_sums).size < 2:
        return None
    low, high = clustered_t(difference_sums, unit_counts, confidence=confidence)
    return float(low), float(high)


def paired_rate_delta_ci(
    a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval for p_B - p_A from paired 0/1 outcomes (Newcombe 1998,
    "Improved confidence intervals for the difference between binomial proportions based on
    paired data", method 10), on the last axis; arrays broadcast as in `stats.wilson_interval`.

    Why not the t interval `delta_ci` gives other metrics: two models that agree on every
    sample (the common case for a fine-tune on an easy set) have differences that are all 0,
    so t collapses to (0, 0) and a gate reads certainty into 25 questions. Newcombe combines
    the two rates' Wilson intervals ("square and add"), corrected for their correlation phi
    across samples, so it keeps its width at the edges (all 25 right for both: about
    (-0.13, 0.13)) and its coverage at small n (tests/test_interval_coverage.py). phi is
    Newcombe's continuity-corrected estimate: (n11 n00 - n10 n01 - n/2) when that product
    exceeds n/2, 0 between 0 and n/2, the product itself below 0, over the square root of the
    four margins' product (0 when a margin is empty).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    n = a.shape[-1]
    both = (a * b).sum(axis=-1)
    only_b = ((1.0 - a) * b).sum(axis=-1)
    only_a = (a * (1.0 - b)).sum(axis=-1)
    neither = n - both - only_b - only_a
    rate_b, rate_a = (both + only_b) / n, (both + only_a) / n
    low_b, high_b = wilson_interval(rate_b, n, confidence=confidence)
    low_a, high_a = wilson_interval(rate_a, n, confidence=confidence)
    product = both * neither - only_a * only_b
    corrected = np.where(product > n / 2.0, product - n / 2.0, np.minimum(product, 0.0))
    margins = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(margins > 0, corrected / np.sqrt(margins), 0.0)
    delta = rate_b - rate_a
    down_b, up_a = rate_b - low_b, high_a - rate_a
    up_b, down_a = high_b - rate_b, rate_a - low_a
    low = delta - np.sqrt(np.maximum(down_b**2 - 2 * phi * down_b * up_a + up_a**2, 0.0))
    high = delta + np.sqrt(np.maximum(up_b**2 - 2 * phi * up_b * down_a + down_a**2, 0.0))
    return low, high
