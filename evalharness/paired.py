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

from evalharness.stats import T_CLUSTERED, clustered_t


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


#: How `delta_ci` makes its interval (the `ci_method` compare reports).
DELTA_CI_METHOD = T_CLUSTERED


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
