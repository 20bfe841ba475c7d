"""Paired tests for two runs scored on the same samples.

Pairing removes the between-sample variance that dominates benchmark scores, so a paired test
detects a regression that two independent confidence intervals would both contain. The tests:
McNemar's exact test for 0/1 outcomes, Wilcoxon's signed-rank test for ratings and other
numbers, and a bootstrap CI of the difference in means that resamples whole samples (a sample's
units, e.g. MT-Bench's two turns, move together because they are not independent). Which test
runs on which values, one per unit or one per sample, is `compare`'s choice.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, wilcoxon

from evalharness.stats import ratio_bootstrap_ci


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


def cluster_bootstrap_ci(
    difference_sums: np.ndarray,
    unit_counts: np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of sum(differences) / sum(units) when whole samples are resampled.

    `difference_sums[i]` is the sum over sample i's units of (B - A); `unit_counts[i]` how many
    units it has. With one unit per sample this is the ordinary paired bootstrap of the mean.
    """
    return ratio_bootstrap_ci(
        difference_sums,
        unit_counts,
        seed=seed,
        n_resamples=n_resamples,
        confidence=confidence,
    )
