"""Honest intervals: Wilson score intervals for rates (clustered when outcomes are), Student t
over clusters for MT-Bench ratings and compare's deltas, the micro-F1 bootstrap, and the compare
gate's false-alarm rate on two identical models. Coverage by simulation is in
test_interval_coverage.py."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest, ttest_1samp

from evalharness.stats.comparison import _outcomes, _paired_metric
from evalharness.stats.intervals import (
    T_CLUSTERED,
    WILSON_CLUSTERED,
    bootstrap_ci,
    clustered_wilson,
    mean_of_proportions_ci,
    mean_t_ci,
    micro_prf_bootstrap_ci,
    proportion_ci,
    wilson_interval,
)
from evalharness.tasks.base import Sample
from evalharness.tasks.registry import get_task_class


def _scipy_wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    interval = binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    return interval.low, interval.high


def _scipy_t(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    interval = ttest_1samp(values, 0.0).confidence_interval(confidence)
    return interval.low, interval.high


# -- rates: the Wilson score interval --------------------------------------------------------


@pytest.mark.parametrize("trials", [1, 2, 8, 25, 80])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_is_scipys_for_every_count(trials: int, confidence: float) -> None:
    for successes in range(trials + 1):
        outcomes = [1.0] * successes + [0.0] * (trials - successes)
        expected = _scipy_wilson(successes, trials, confidence)
        assert proportion_ci(outcomes, confidence=confidence) == pytest.approx(expected, abs=1e-12)
        low, high = wilson_interval(successes / trials, trials, confidence=confidence)
        assert (float(low), float(high)) == pytest.approx(expected, abs=1e-12)


def test_a_rate_at_the_edge_keeps_an_interval() -> None:
    # All 25 refused: the percentile bootstrap gave (1.0, 1.0); Wilson's lower bound is 0.867.
    low, high = proportion_ci([1.0] * 25)
    assert high == 1.0 and low == pytest.approx(_scipy_wilson(25, 25)[0]) and low < 0.9
    low, high = proportion_ci([0.0] * 8)
    assert low == 0.0 and high == pytest.approx(_scipy_wilson(0, 8)[1]) and high > 0.3
    # The metric's scale: a rate in percent gets its interval in percent.
    percent = proportion_ci([1.0, 0.0, 1.0, 1.0], scale=100.0)
    assert percent == pytest.approx(tuple(100 * x for x in _scipy_wilson(3, 4)))
    assert proportion_ci([]) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        proportion_ci([1.0, 2.0])
    with pytest.raises(ValueError, match="2 values but 1 cluster labels"):
        proportion_ci([1.0, 0.0], ["a"])


def test_clustered_wilson_counts_correlated_outcomes_by_their_effective_number() -> None:
    rng = np.random.default_rng(0)
    per_question = (rng.random(40) < 0.7).astype(float)
    questions = [f"q{i}" for i in range(40)]
    k = int(per_question.sum())
    # The same verdict on both turns: 80 verdicts that say what 40 do.
    both = proportion_ci(np.repeat(per_question, 2), np.repeat(questions, 2))
    assert both == pytest.approx(_scipy_wilson(k, 40), abs=1e-12)
    # One verdict per question: the plain Wilson interval.
    assert proportion_ci(per_question, questions) == pytest.approx(_scipy_wilson(k, 40))
    # Independent turns: narrower than counting questions, never narrower than all verdicts.
    turns = (rng.random(80) < 0.7).astype(float)
    clustered = proportion_ci(turns, np.repeat(questions, 2))
    naive = _scipy_wilson(int(turns.sum()), 80)
    by_question = wilson_interval(turns.mean(), 40)
    assert clustered is not None
    width = clustered[1] - clustered[0]
    assert naive[1] - naive[0] - 1e-12 <= width <= by_question[1] - by_question[0] + 1e-12
    # All wins on 8 questions: the cautious end (8 trials), not a point.
    low, high = proportion_ci([1.0] * 16, np.repeat(range(8), 2))
    assert (low, high) == pytest.approx(_scipy_wilson(8, 8))
    # Vectorised over leading axes, as the simulation tests use it.
    sums = np.stack([per_question * 2, np.ones(40)])
    lows, highs = clustered_wilson(sums, np.full((2, 40), 2.0))
    assert (lows[0], highs[0]) == pytest.approx(both)


def test_mean_of_two_rates_combines_their_wilson_intervals() -> None:
    unsafe, safe = [1.0] * 20, [1.0] * 18 + [0.0] * 2
    low, high = mean_of_proportions_ci([unsafe, safe])  # type: ignore[misc]
    # MOVER from scipy's own Wilson limits of each rate.
    (l1, u1), (l2, u2) = _scipy_wilson(20, 20), _scipy_wilson(18, 20)
    estimate = (1.0 + 0.9) / 2
    assert low == pytest.approx(estimate - math.hypot(1.0 - l1, 0.9 - l2) / 2)
    assert high == pytest.approx(estimate + math.hypot(u1 - 1.0, u2 - 0.9) / 2)
    # Both rates 1: an interval below 1, where the bootstrap's was (1.0, 1.0).
    low, high = mean_of_proportions_ci([[1.0] * 20, [1.0] * 20])  # type: ignore[misc]
    assert high == 1.0 and low < 0.9
    assert mean_of_proportions_ci([[1.0], []]) is None


# -- means over clusters: Student t ----------------------------------------------------------


def test_clustered_t_counts_a_questions_values_as_one() -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(6.0, 2.0, size=60)
    ids = [f"q{i}" for i in range(60)]
    one_each = mean_t_ci(means, ids)
    assert one_each == pytest.approx(_scipy_t(means))  # the one-sample t interval
    # Both turns equal: the same interval as one value per question, since the pair is one
    # cluster; taking the 120 values as independent would narrow it by about sqrt(2).
    both = mean_t_ci(np.repeat(means, 2), np.repeat(ids, 2))
    assert both == pytest.approx(one_each)
    naive = mean_t_ci(np.repeat(means, 2))
    assert one_each is not None and naive is not None
    ratio = (one_each[1] - one_each[0]) / (naive[1] - naive[0])
    assert 1.3 < ratio < 1.5
    # Equal clusters of two different turns: the t interval over the question means.
    turns = rng.normal(6.0, 2.0, size=(60, 2))
    assert mean_t_ci(turns.ravel(), np.repeat(ids, 2)) == pytest.approx(_scipy_t(turns.mean(1)))
    # Uneven clusters: centred on the mean over all values (a ratio of sums).
    low, high = mean_t_ci([1.0, 3.0, 8.0, 5.0], ["a", "a", "b", "c"])  # type: ignore[misc]
    assert low < 17.0 / 4 < high
    # Fewer than two clusters say nothing about spread.
    assert mean_t_ci([2.0, 4.0], ["a", "a"]) is None
    assert mean_t_ci([], []) is None
    with pytest.raises(ValueError, match="2 values but 1 cluster labels"):
        mean_t_ci([1.0, 2.0], ["a"])


def test_micro_f1_bootstrap_resamples_items_and_recomputes_f1_from_counts() -> None:
    rng = np.random.default_rng(1)
    correct = (rng.random(200) < 0.6).astype(int)
    ones = np.ones(200, dtype=int)
    # One prediction and one gold item each: P = R = F1 = accuracy, so the F1 interval is the
    # bootstrap of the mean over the same resampled items (same seed, same draws).
    intervals = micro_prf_bootstrap_ci(correct, ones, ones, seed=2)
    assert intervals is not None
    accuracy = bootstrap_ci(correct, seed=2)
    assert intervals["f1"] == pytest.approx(accuracy)
    assert intervals["precision"] == pytest.approx(accuracy)
    # Counts of several sizes: the interval holds the point estimate, P and R get their own.
    tp = rng.integers(0, 4, size=150)
    predicted = tp + rng.integers(0, 3, size=150)
    gold = tp + rng.integers(0, 2, size=150)
    p, r = tp.sum() / predicted.sum(), tp.sum() / gold.sum()
    f1 = 2 * p * r / (p + r)
    intervals = micro_prf_bootstrap_ci(tp, predicted, gold, seed=0)
    assert intervals is not None
    for name, value in (("precision", p), ("recall", r), ("f1", f1)):
        low, high = intervals[name]
        assert low < value < high, name
        assert high - low < 0.2
    assert micro_prf_bootstrap_ci(tp, predicted, gold, seed=0) == intervals
    # Nothing predicted anywhere: 0, never NaN; no samples: no interval.
    assert micro_prf_bootstrap_ci([0, 0], [0, 0], [1, 2]) == {
        "precision": (0.0, 0.0),
        "recall": (0.0, 0.0),
        "f1": (0.0, 0.0),
    }
    assert micro_prf_bootstrap_ci([], [], []) is None


# -- MT-Bench: a question's two turns are one cluster --------------------------------------


def _correlated_ratings(n: int, seed: int) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Questions whose two turn ratings are nearly equal (strong within-question correlation)."""
    rng = np.random.default_rng(seed)
    samples, scores = [], []
    for i in range(n):
        level = float(np.clip(np.rint(rng.normal(6.0, 2.0)), 1, 10))
        second = float(np.clip(level + rng.choice([-1.0, 0.0, 0.0, 1.0]), 1, 10))
        category = ("writing", "math")[i % 2]
        samples.append(Sample(str(i), {"category": category}))
        scores.append({"category": category, "turn1": level, "turn2": second, "failures": 0})
    return samples, scores


def test_mt_bench_ci_is_t_over_questions_so_both_turns_count_once() -> None:
    samples, scores = _correlated_ratings(60, seed=0)
    task = get_task_class("mt_bench")({}, seed=3)
    result = task.aggregate(samples, scores)
    question_means = np.array([(s["turn1"] + s["turn2"]) / 2 for s in scores])
    assert result.ci["score"] == pytest.approx(_scipy_t(question_means))
    assert result.ci_method["score"] == T_CLUSTERED
    ratings = [s[t] for s in scores for t in ("turn1", "turn2")]
    per_turn = _scipy_t(np.array(ratings))  # what taking turns as independent gives
    width = result.ci["score"][1] - result.ci["score"][0]
    assert width > 1.25 * (per_turn[1] - per_turn[0])
    assert result.ci["score"][0] < result.metrics["score"] < result.ci["score"][1]
    # Categories cluster too; per-turn metrics have one value per question.
    writing = [m for m, s in zip(question_means, scores, strict=True) if s["category"] == "writing"]
    assert result.ci["writing"] == pytest.approx(_scipy_t(np.array(writing)))
    assert result.ci["score_turn1"] == pytest.approx(
        _scipy_t(np.array([s["turn1"] for s in scores]))
    )
    assert set(result.ci_method) == set(result.ci)
    # A failed verdict leaves its question one rating: the interval is still centred on the
    # mean over the ratings there are.
    scores[0] = {**scores[0], "turn2": None}
    partial = task.aggregate(samples, scores)
    assert partial.ci["score"][0] < partial.metrics["score"] < partial.ci["score"][1]


def test_mt_bench_at_eight_questions_is_wider_than_the_bootstrap_was() -> None:
    samples, scores = _correlated_ratings(8, seed=2)
    result = get_task_class("mt_bench")({}, seed=0).aggregate(samples, scores)
    question_means = np.array([(s["turn1"] + s["turn2"]) / 2 for s in scores])
    low, high = result.ci["score"]
    assert (low, high) == pytest.approx(_scipy_t(question_means))
    # t with 7 degrees of freedom: 2.36 standard errors each side, not the bootstrap's ~1.8.
    error = question_means.std(ddof=1) / math.sqrt(8)
    assert (high - low) / 2 == pytest.approx(2.365 * error, rel=1e-3)


def test_mt_bench_pairwise_rates_are_wilson_intervals_clustered_by_question() -> None:
    samples, _ = _correlated_ratings(40, seed=1)
    winners = ("candidate", "tie", "baseline")
    scores = [
        {
            "category": x.data["category"],
            "turn1": winners[i % 3],
            "turn2": winners[i % 3],  # the same verdict on both turns: perfectly correlated
            "turn1_consistent": True,
            "turn2_consistent": True,
            "failures": 0,
        }
        for i, x in enumerate(samples)
    ]
    task = get_task_class("mt_bench")({"mode": "pairwise", "baseline": "run"}, seed=0)
    result = task.aggregate(samples, scores)
    # Perfectly correlated turns say what one verdict per question says: Wilson over the 40
    # questions (scipy's), not over 80 verdicts.
    for name, winner in (("win_rate", "candidate"), ("tie_rate", "tie"), ("loss_rate", "baseline")):
        k = sum(winners[i % 3] == winner for i in range(40))
        assert result.ci[name] == pytest.approx(_scipy_wilson(k, 40), abs=1e-12)
        assert result.ci_method[name] == WILSON_CLUSTERED
    # The score (wins + ties / 2) is a rate of points in [0, 1]; every order agreed: the
    # interval stays below 1 (the bootstrap's was (1.0, 1.0)).
    assert result.ci["score"][0] < result.metrics["score"] < result.ci["score"][1]
    assert result.ci["swap_consistency"] == pytest.approx(_scipy_wilson(40, 40))
    assert result.ci["swap_consistency"][0] < 0.95
    assert set(result.ci_method) == set(result.ci)


# -- compare's gate on two identical models ------------------------------------------------


def _identical_models(seed: int, n: int = 80) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two runs of exchangeable models on n MT-Bench-like questions.

    Each question has a difficulty shared by both models, and each model a take on the
    question (how well its answer went) shared by both of its turns: turn 2 continues turn 1's
    dialogue and is judged with it. So the two turn differences of a question are strongly
    correlated, as on real MT-Bench runs; given the question, A and B are i.i.d.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(6.0, 1.5, size=n)

    def run() -> dict[str, Any]:
        take = rng.normal(0.0, 1.5, size=n)
        turns = difficulty[:, None] + take[:, None] + rng.normal(0.0, 0.5, size=(n, 2))
        ratings = np.clip(np.rint(turns), 1, 10)
        return {
            str(i): {"category": "writing", "turn1": ratings[i, 0], "turn2": ratings[i, 1]}
            for i in range(n)
        }

    return run(), run()


def test_the_gate_false_alarm_rate_on_identical_models_is_at_most_alpha() -> None:
    """Measured: 0.05 here (0.049 over 2000 seeds); testing turns as independent pairs, as
    compare did before, rejected 0.16 (0.148 over 2000 seeds) at alpha = 0.05."""
    task_class = get_task_class("mt_bench")
    alpha, n_seeds = 0.05, 400
    alarms = 0
    for seed in range(n_seeds):
        a, b = _identical_models(seed)
        ids = list(a)
        row = _paired_metric(
            "score",
            _outcomes(task_class, a, ids, {})["score"],
            _outcomes(task_class, b, ids, {})["score"],
            alpha=alpha,
        )
        alarms += bool(row.significant)
    rate = alarms / n_seeds
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_seeds), rate
