"""Aggregate statistics shared by tasks: means and confidence intervals, each named by method.

An interval is only as good as its coverage where the metric is used, and metrics live at the
edges: a safety model refuses nearly every unsafe prompt, a smoke test judges eight MT-Bench
questions. So the method follows what the metric is, and each interval is stored with its
method's name (`ci_method`, one of `CI_METHODS`) so a reader knows what it means:

- A rate (a proportion of 0/1 outcomes: refusal rate, accuracy, win rate) gets the Wilson score
  interval (`proportion_ci`). A percentile bootstrap of a proportion collapses at the edges:
  every resample of 25 refusals out of 25 is 1.0, so the interval is (1.0, 1.0); its simulated
  coverage is 0.53 at n = 25, p = 0.97. When the outcomes come in correlated clusters (an
  MT-Bench question's two turns) the Wilson interval is taken on the effective sample size.
- A mean of scores over a few clusters (MT-Bench ratings over questions, compare's paired
  delta) gets the Student t interval over the clusters (`mean_t_ci`): the bootstrap's
  interval is too narrow at small n (coverage 0.88 at 8 questions in the tests' simulation).
- Other statistics (micro-F1 from summed counts, mean rank, soft preferences) keep a seeded
  percentile bootstrap, resampling the independent unit.

Resampling or counting correlated values one by one would treat them as independent and narrow
the interval below its stated coverage; the methods that take clusters count each as one unit.
`Intervals.mean` makes this choice for a task's means and records the method's name.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Resamples drawn per block; bounds the bootstrap's memory at any number of samples.
_BLOCK = 128

WILSON = "wilson"
WILSON_CLUSTERED = "wilson-clustered"
WILSON_MOVER = "wilson-mover"
T_CLUSTERED = "t-clustered"
BOOTSTRAP = "bootstrap-percentile"
BOOTSTRAP_REFIT = "bootstrap-refit"
NEWCOMBE_PAIRED = "newcombe-paired"

#: What each `ci_method` name stored beside an interval means (the report shows these).
CI_METHODS: dict[str, str] = {
    WILSON: "Wilson score interval of a proportion",
    WILSON_CLUSTERED: (
        "Wilson score interval on the effective sample size of clustered outcomes "
        "(Korn & Graubard 1998)"
    ),
    WILSON_MOVER: "mean of two independent proportions: their Wilson intervals combined by MOVER",
    T_CLUSTERED: "Student t interval over clusters (df = clusters - 1)",
    BOOTSTRAP: "percentile bootstrap (1000 resamples, seeded)",
    NEWCOMBE_PAIRED: (
        "difference of two paired proportions: Newcombe's hybrid score interval "
        "(their Wilson intervals combined, corrected for their correlation)"
    ),
    BOOTSTRAP_REFIT: (
        "percentile bootstrap over instructions, refitting the model on every resample "
        "(AlpacaEval's length-controlled GLM; 200 resamples, seeded)"
    ),
}


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


# -- rates: Wilson score intervals ------------------------------------------------------------


def wilson_interval(
    rate: np.ndarray | float, n: np.ndarray | float, *, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion `rate` observed over `n` trials, elementwise.

    Why Wilson: its coverage averaged over p stays at the nominal level down to n = 8 and near
    p = 0 and 1 (simulated over the edge bands p < 0.1 and p > 0.9: 0.947, 0.955 and 0.954 at
    n = 8, 25 and 80), and it never collapses to a point: all-refused at n = 25 gives
    (0.867, 1.0). Clopper-Pearson's exact interval holds at least the nominal level at every p,
    but by being wider: 0.98-0.99 near the edges at these n, an interval that says less than
    the data do. Wilson's one known dip (coverage down to 0.84 within about 0.2/n of 0 or 1)
    is narrow; its average there is still nominal.

    Written out rather than calling `scipy.stats.binomtest(k, n).proportion_ci("wilson")`
    because it also has to take what scipy's integer counts cannot: an effective sample size
    (`clustered_wilson`) and rates of values in [0, 1] (a retrieval credit split over a tie,
    whose variance is at most p(1 - p), so the interval is conservative there). The tests hold
    it to scipy's for every count at several n and levels. Arrays broadcast: the simulation
    tests compute thousands of intervals at once.
    """
    # scipy's quantile (exact to the last bit, as its binomtest's Wilson interval takes it);
    # imported here, as `clustered_t` imports scipy.stats, to keep scipy out of start-up.
    from scipy.special import ndtri

    rate = np.asarray(rate, dtype=float)
    n = np.asarray(n, dtype=float)
    z = ndtri(0.5 + confidence / 2.0)
    shrink = z * z / n
    center = (rate + shrink / 2.0) / (1.0 + shrink)
    half = z / (1.0 + shrink) * np.sqrt(rate * (1.0 - rate) / n + shrink / (4.0 * n))
    # At 0 and 1 the bound is exactly the edge; rounding would leave 0.9999999999999999.
    low = np.where(rate <= 0.0, 0.0, np.clip(center - half, 0.0, 1.0))
    high = np.where(rate >= 1.0, 1.0, np.clip(center + half, 0.0, 1.0))
    return low, high


def clustered_wilson(
    sums: np.ndarray, counts: np.ndarray, *, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson interval of sum(sums) / sum(counts) over the last axis's clusters, taken on the
    effective sample size (Korn & Graubard 1998): n_eff = p(1 - p) / v, with v the
    cluster-robust variance of the ratio estimate.

    `sums[..., i]` is the sum of cluster i's outcomes and `counts[..., i]` how many it has.
    Correlated outcomes (an MT-Bench question's two verdicts) carry less information than
    independent ones, so n_eff falls from the number of outcomes toward the number of
    clusters as the correlation grows; it is kept between the two (the design effect of
    clusters this size lies there). At p = 0 or 1 the variance says nothing, and n_eff is the
    number of clusters: the cautious end. With one outcome per cluster this is `wilson_interval`.
    """
    sums = np.asarray(sums, dtype=float)
    counts = np.asarray(counts, dtype=float)
    clusters = sums.shape[-1]
    total = counts.sum(axis=-1)
    rate, spread = _ratio_and_spread(sums, counts)
    variance = spread / total**2
    binomial = rate * (1.0 - rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        effective = np.where(
            variance > 0, binomial / variance, np.where(binomial > 0, total, clusters)
        )
    return wilson_interval(rate, np.clip(effective, clusters, total), confidence=confidence)


def proportion_ci(
    outcomes: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    *,
    confidence: float = 0.95,
    scale: float = 1.0,
) -> tuple[float, float] | None:
    """Wilson score CI of a rate: the mean of `outcomes`, each 0 or 1 (or a credit in [0, 1]).

    With `clusters` (`clusters[i]` is the cluster of `outcomes[i]`), outcomes of one cluster
    are taken as correlated (`clustered_wilson`). `scale` is the metric's scale: 100 for a rate
    in percent. None without outcomes.
    """
    data = np.asarray(outcomes, dtype=float)
    if data.size == 0:
        return None
    if np.any((data < 0.0) | (data > 1.0)) or not np.all(np.isfinite(data)):
        raise ValueError("a rate's outcomes must lie between 0 and 1")
    if clusters is None:
        low, high = wilson_interval(data.mean(), data.size, confidence=confidence)
    else:
        sums, counts = _cluster_totals(data, clusters)
        low, high = clustered_wilson(sums, counts, confidence=confidence)
    return float(low) * scale, float(high) * scale


def mean_of_proportions_ci(
    groups: Sequence[Sequence[float]], *, confidence: float = 0.95
) -> tuple[float, float] | None:
    """CI of the mean of independent groups' rates (balanced accuracy: the mean of the refusal
    rate on unsafe prompts and the compliance rate on safe ones).

    MOVER (Zou & Donner 2008, Newcombe's method for sums of proportions): each rate's Wilson
    limits give its variance on each side, and the sum's limits are the estimate minus (plus)
    the root of the summed squared distances to the lower (upper) limits. It keeps the
    Wilson interval's behaviour at the edges, where both rates near 1 made the bootstrap's
    interval of the mean a point. None if a group is empty.
    """
    if not groups or any(len(g) == 0 for g in groups):
        return None
    rates = np.array([np.mean(g) for g in groups], dtype=float)
    intervals = [proportion_ci(g, confidence=confidence) for g in groups]
    lows = np.array([i[0] for i in intervals if i is not None])
    highs = np.array([i[1] for i in intervals if i is not None])
    estimate = rates.mean()
    below = np.sqrt(((rates - lows) ** 2).sum()) / rates.size
    above = np.sqrt(((highs - rates) ** 2).sum()) / rates.size
    return float(max(estimate - below, 0.0)), float(min(estimate + above, 1.0))


# -- means over clusters: Student t ----------------------------------------------------------


def clustered_t(
    sums: np.ndarray, counts: np.ndarray, *, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Student t CI of sum(sums) / sum(counts) over the last axis's clusters (at least two).

    The standard error is the cluster-robust one of the ratio estimate, with G / (G - 1), and
    the quantile t with G - 1 degrees of freedom. With equal cluster sizes (every MT-Bench
    question judged on both turns) this is exactly the one-sample t interval over the cluster
    means; a cluster that lost a value (a failed verdict) weighs by what it has, as the point
    estimate does.

    Why t and not the bootstrap, percentile or BCa: both estimate the spread with n, not
    n - 1, in the denominator and take normal rather than t quantiles, so they are too narrow
    when there are few clusters. Simulated MT-Bench ratings (tests/test_interval_coverage.py)
    covered 0.88 with either at 8 questions and 0.93 at 25; t covers 0.946, 0.949 and 0.950 at
    8, 25 and 80, and is exact for normal cluster means. Its limit, as for any interval from
    the sample alone: ratings piled against the scale's end with rare low ones (a strong model
    on 8 questions) under-cover, because most samples never show the low tail (0.81 at 8
    questions in one such simulation, where the bootstrap covered 0.75).
    """
    # Here, not at the top: every task imports this module, and scipy.stats takes about a
    # second to import, which every command that lists the tasks would pay.
    from scipy.stats import t as student_t

    sums = np.asarray(sums, dtype=float)
    counts = np.asarray(counts, dtype=float)
    clusters = sums.shape[-1]
    if clusters < 2:
        raise ValueError("a t interval needs at least two clusters")
    estimate, spread = _ratio_and_spread(sums, counts)
    error = np.sqrt(spread) / counts.sum(axis=-1)
    half = student_t.ppf(0.5 + confidence / 2.0, clusters - 1) * error
    return estimate - half, estimate + half


def _ratio_and_spread(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum(sums) / sum(counts) over the last axis's clusters, and G / (G - 1) times the sum of
    the G clusters' squared residuals (0 for one cluster, which shows no spread): over
    sum(counts) squared, the cluster-robust variance of that ratio."""
    clusters = sums.shape[-1]
    total = counts.sum(axis=-1)
    estimate = sums.sum(axis=-1) / total
    if clusters < 2:
        return estimate, np.zeros_like(estimate)
    residuals = sums - estimate[..., None] * counts
    return estimate, clusters / (clusters - 1) * (residuals**2).sum(axis=-1)


def mean_t_ci(
    values: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    *,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Student t CI of the mean of `values` over clusters (`clustered_t`); each value its own
    cluster when `clusters` is None. None with fewer than two clusters: one question says
    nothing about how much questions vary."""
    data = np.asarray(values, dtype=float)
    if clusters is None:
        clusters = range(data.size)
    sums, counts = _cluster_totals(data, clusters)
    if sums.size < 2:
        return None
    low, high = clustered_t(sums, counts, confidence=confidence)
    return float(low), float(high)


def _cluster_totals(
    values: np.ndarray, clusters: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums and counts, clusters in order of first appearance."""
    if len(clusters) != values.size:
        raise ValueError(f"{values.size} values but {len(clusters)} cluster labels")
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(c, len(index)) for c in clusters], dtype=int)
    if values.size == 0:
        return np.zeros(0), np.zeros(0)
    return np.bincount(codes, weights=values), np.bincount(codes).astype(float)


# -- everything else: percentile bootstrap ----------------------------------------------------


def bootstrap_ci(
    values: Sequence[float],
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean; seeded so the same data gives the same interval.

    For means that are neither rates nor clustered scores (soft preferences, ranks)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    resampled = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    return _percentiles(resampled, confidence)


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


# -- an aggregate's intervals, each with its method -------------------------------------------


@dataclass
class Intervals:
    """A task aggregate's CIs by metric (`ci`) and the method that made each (`method`): what
    `TaskResult.ci` and `TaskResult.ci_method` take. `mean` picks the method for a mean as the
    module docstring says; `add` records an interval made some other way. A None interval (too
    few values) records nothing, so `ci` and `method` always name the same metrics."""

    #: Seeds the bootstrap (a task passes its run seed), so a run's intervals are reproducible.
    seed: int = 0
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    method: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, interval: tuple[float, float] | None, method: str) -> None:
        if interval is not None:
            self.ci[name] = interval
            self.method[name] = method

    def mean(
        self,
        name: str,
        values: Sequence[float],
        *,
        rate: bool,
        clusters: Sequence[Hashable] | None = None,
    ) -> None:
        """The CI of the mean of `values`. A `rate` (outcomes 0 or 1, or credits in [0, 1])
        gets the Wilson interval, clustered when `clusters` labels each value's cluster; any
        other mean the t interval over `clusters`, or without them a seeded bootstrap."""
        if rate:
            method = WILSON if clusters is None else WILSON_CLUSTERED
            self.add(name, proportion_ci(values, clusters), method)
        elif clusters is not None:
            self.add(name, mean_t_ci(values, clusters), T_CLUSTERED)
        else:
            self.add(name, bootstrap_ci(values, seed=self.seed), BOOTSTRAP)
