"""Aggregate statistics shared by tasks: means and seeded bootstrap confidence intervals.

Every interval is a percentile bootstrap, seeded so the same data gives the same interval. What
is resampled is the unit that is independent: a sample (`bootstrap_ci`), or a cluster of
correlated values such as an MT-Bench question's two turns (`cluster_bootstrap_mean`).
Resampling correlated values one by one would treat them as independent and narrow the
interval below its stated coverage.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

#: Resamples drawn per block; bounds the bootstrap's memory at any number of samples.
_BLOCK = 128


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def bootstrap_ci(
    values: Sequence[float],
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean; seeded so the same data gives the same interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    resampled = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _resampled(
    n: int,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int,
    n_resamples: int,
) -> np.ndarray:
    """`statistic` of `n_resamples` resamples of n indices, drawn block by block.

    `statistic` maps an (m, n) array of resampled indices to m values (or m rows of values),
    one per resample; the result stacks them.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, n_resamples, _BLOCK):
        stop = min(start + _BLOCK, n_resamples)
        blocks.append(statistic(rng.integers(0, n, size=(stop - start, n))))
    return np.concatenate(blocks)


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)


def ratio_bootstrap_ci(
    sums: np.ndarray,
    counts: np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of sum(sums) / sum(counts) when whole clusters are resampled.

    `sums[i]` is the sum of cluster i's values and `counts[i]` how many it has, so the statistic
    is the mean over all values, each cluster weighted by its size. With one value per cluster
    this is the ordinary bootstrap of the mean.
    """
    sums = np.asarray(sums, dtype=float)
    counts = np.asarray(counts, dtype=float)
    if sums.size == 1:
        value = float(sums[0] / counts[0])
        return value, value
    draws = _resampled(
        sums.size,
        lambda picked: sums[picked].sum(axis=1) / counts[picked].sum(axis=1),
        seed=seed,
        n_resamples=n_resamples,
    )
    return _percentiles(draws, confidence)


def cluster_bootstrap_mean(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile CI of the mean of `values` resampling whole clusters (`clusters[i]` is the
    cluster of `values[i]`), so correlated values (a question's turns) move together.

    The statistic is the plain mean of the values in the resample (a ratio of sums, as the
    point estimate is computed). None without values.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    if len(clusters) != data.size:
        raise ValueError(f"{data.size} values but {len(clusters)} cluster labels")
    # Clusters in order of first appearance: the interval does not depend on how labels sort.
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(c, len(index)) for c in clusters])
    sums = np.bincount(codes, weights=data)
    counts = np.bincount(codes)
    return ratio_bootstrap_ci(
        sums, counts, seed=seed, n_resamples=n_resamples, confidence=confidence
    )


def micro_prf_bootstrap_ci(
    true_positives: Sequence[int],
    n_predicted: Sequence[int],
    n_gold: Sequence[int],
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]] | None:
    """Percentile CIs of micro precision, recall and F1, resampling whole samples.

    Element i holds sample i's counts. Each resample sums the counts of the drawn samples and
    recomputes P = TP / predicted, R = TP / gold, F1 = 2PR / (P + R), each 0 when its
    denominator is 0 (as the point estimate is computed). None without samples.
    """
    tp = np.asarray(true_positives, dtype=float)
    predicted = np.asarray(n_predicted, dtype=float)
    gold = np.asarray(n_gold, dtype=float)
    if tp.size == 0:
        return None
    if not tp.size == predicted.size == gold.size:
        raise ValueError("true_positives, n_predicted and n_gold differ in length")

    def prf(picked: np.ndarray) -> np.ndarray:
        hits, pred, gold_n = tp[picked].sum(1), predicted[picked].sum(1), gold[picked].sum(1)
        p = np.divide(hits, pred, out=np.zeros_like(hits), where=pred > 0)
        r = np.divide(hits, gold_n, out=np.zeros_like(hits), where=gold_n > 0)
        total = p + r
        f1 = np.divide(2 * p * r, total, out=np.zeros_like(total), where=total > 0)
        return np.stack([p, r, f1], axis=1)

    draws = _resampled(tp.size, prf, seed=seed, n_resamples=n_resamples)
    return {
        name: _percentiles(draws[:, column], confidence)
        for column, name in enumerate(("precision", "recall", "f1"))
    }
