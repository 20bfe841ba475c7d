"""AlpacaEval metrics: the raw head-to-head rule and the length-controlled GLM, on seeded data."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from evalharness.tasks.alpaca_eval.metrics import (
    L2_PENALTY,
    LC_RESAMPLES,
    LengthControlled,
    RunPreferences,
    head_to_head,
    length_controlled,
)

# ---------------------------------------------------------------------------------------------
# head_to_head


def test_head_to_head_hand_computed() -> None:
    prefs = [2, 1, 1.5, 0, math.nan, None, 1.75, 1.2, 3.0, 1.9]
    out = head_to_head(prefs)
    # Draws are counted before dropping: 1.5 and the legacy 0.
    assert out["n_draws"] == 2
    # Kept (0 -> 1.5, NaN/None/3.0 dropped): 2, 1, 1.5, 1.5, 1.75, 1.2, 1.9.
    assert out["n_total"] == 7
    x = [1, 0, 0.5, 0.5, 0.75, 0.2, 0.9]  # preference - 1
    assert sum(x) == pytest.approx(3.85)
    assert out["win_rate"] == pytest.approx(55.0)
    # Sample variance: (sum x^2 - n mean^2) / (n - 1) = (2.9125 - 7 * 0.55^2) / 6 = 0.1325.
    assert out["standard_error"] == pytest.approx(100 * math.sqrt(0.1325 / 7))
    assert out["n_wins"] == 3  # 1, 0.75, 0.9
    assert out["n_wins_base"] == 2  # 0, 0.2
    # Zero-one: 2, 1, draw, draw, 2 (1.75), 1 (1.2), 2 (1.9); 3.0 dropped -> (4 + 2/2) / 7.
    assert out["discrete_win_rate"] == pytest.approx(100 * 4 / 7)
    assert json.loads(json.dumps(out)) == out
    assert all(type(out[k]) is int for k in ("n_wins", "n_wins_base", "n_draws", "n_total"))
    assert all(type(out[k]) is float for k in ("win_rate", "standard_error", "discrete_win_rate"))


def test_head_to_head_with_nothing_to_average() -> None:
    out = head_to_head([None, math.nan, 7.0])
    assert out["n_total"] == 0
    assert out["win_rate"] is None and out["standard_error"] is None
    assert out["discrete_win_rate"] is None
    single = head_to_head([1.8])
    assert single["win_rate"] == pytest.approx(80.0)
    assert single["standard_error"] is None  # sem of one value is NaN, not JSON
    assert single["discrete_win_rate"] == 100.0


def _alpaca_zero_one_win_rate(prefs: list[float | None]) -> float:
    """AlpacaEval's zero-one path as it is written there: through a nullable Int64 series."""
    rounded = pd.Series(prefs, dtype="float64").replace({1.5: 0}).round().astype(pd.Int64Dtype())
    values = rounded.astype(float).replace({0.0: 1.5})
    values = values[values.apply(lambda v: 1 <= v <= 2)] - 1
    return float(values.mean() * 100)


def test_discrete_win_rate_matches_the_int64_path_on_edge_values() -> None:
    rng = np.random.default_rng(3)
    prefs: list[float | None] = list(rng.uniform(0.8, 2.7, size=200))
    prefs += [1.5, 0.0, 0.4, 2.5, 1.5000001, 1.4999999, None, math.nan]
    assert head_to_head(prefs)["discrete_win_rate"] == pytest.approx(
        _alpaca_zero_one_win_rate(prefs), abs=0
    )


# ---------------------------------------------------------------------------------------------
# length_controlled: a simulated judge with a length bias

N_ITEMS = 805  # the size of AlpacaEval
TRUE_LENGTH_COEF = -1.5  # on tanh(delta / s), delta = baseline - model: longer model -> favoured


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def simulated() -> dict[str, RunPreferences]:
    """Runs judged by a length-biased judge; quality per model, soft labels ~ Beta around p.

    A and A_long have the same quality but A_long's answers are twice as long; B_short has B's
    quality with answers a quarter as long (a model gamed to be concise).
    """
    rng = np.random.default_rng(20240401)
    ids = [f"item-{i}" for i in range(N_ITEMS)]
    baseline = rng.lognormal(np.log(1500), 0.5, N_ITEMS).round()
    a = (baseline * rng.lognormal(0.0, 0.3, N_ITEMS)).round()
    b = (baseline * rng.lognormal(0.1, 0.3, N_ITEMS)).round()
    models = {
        "A": (0.0, a),
        "A_long": (0.0, 2 * a),
        "B": (0.8, b),
        "B_short": (0.8, (0.25 * b).round()),
        "C": (-0.7, (baseline * rng.lognormal(-0.2, 0.3, N_ITEMS)).round()),
    }
    scale = np.std(np.concatenate([baseline - lengths for _, lengths in models.values()]), ddof=1)
    runs = {}
    for name, (quality, lengths) in models.items():
        p = _sigmoid(quality + TRUE_LENGTH_COEF * np.tanh((baseline - lengths) / scale))
        y = rng.beta(8 * p, 8 * (1 - p))
        runs[name] = RunPreferences(
            item_ids=ids,
            preferences=list(1 + y),
            model_lengths=[int(v) for v in lengths],
            baseline_lengths=[int(v) for v in baseline],
        )
    return runs


def _raw(run: RunPreferences) -> float:
    return head_to_head(run.preferences)["win_rate"]


def test_joint_fit_removes_the_length_bias(simulated: dict[str, RunPreferences]) -> None:
    raw_move = _raw(simulated["A_long"]) - _raw(simulated["A"])
    assert raw_move > 10

    lc = length_controlled(simulated)
    assert lc.variant == "minimal" and lc.n_runs == 5 and lc.difficulty_coef is None
    lc_move = lc.win_rates["A_long"] - lc.win_rates["A"]
    assert abs(lc_move) < raw_move / 3
    # The shared coefficient recovers the simulated judge's bias, sign included.
    assert lc.length_coef == pytest.approx(TRUE_LENGTH_COEF, abs=0.25)
    # Quality ordering is the simulated one.
    assert lc.win_rates["C"] < lc.win_rates["A"] < lc.win_rates["B"]


def test_gamed_concise_model_stays_close_to_its_twin(simulated: dict[str, RunPreferences]) -> None:
    raw_drop = _raw(simulated["B"]) - _raw(simulated["B_short"])
    assert raw_drop > 10
    lc = length_controlled(simulated)
    assert abs(lc.win_rates["B_short"] - lc.win_rates["B"]) < min(5.0, raw_drop / 3)


def test_single_run_fit(simulated: dict[str, RunPreferences]) -> None:
    for name, run in simulated.items():
        lc = length_controlled({name: run})
        assert lc.n_runs == 1 and set(lc.win_rates) == {name}
        assert 0 < lc.win_rates[name] < 100
        assert math.isfinite(lc.length_coef)
    # A run with ordinary lengths is barely moved by its own fit.
    alone = length_controlled({"A": simulated["A"]}).win_rates["A"]
    assert alone == pytest.approx(_raw(simulated["A"]), abs=3)


def test_fit_solves_the_score_equations(simulated: dict[str, RunPreferences]) -> None:
    """At the optimum the mean prediction of each run equals its mean label (quality gradient),
    and residuals are orthogonal to the length feature; checked from the returned weights."""
    lc = length_controlled(simulated)
    features, residuals = [], []
    for name, run in simulated.items():
        delta = np.asarray(run.baseline_lengths, float) - np.asarray(run.model_lengths, float)
        y = np.asarray(run.preferences) - 1
        features.append(delta)
        residuals.append((name, y))
    scale = np.std(np.concatenate(features), ddof=1)
    total = 0.0
    for delta, (name, y) in zip(features, residuals, strict=True):
        f = np.tanh(delta / scale)
        p = _sigmoid(lc.length_coef * f + lc.quality[name])
        assert p.mean() == pytest.approx(y.mean(), abs=1e-4)
        total += float(((p - y) * f).sum())
    assert abs(total) / (len(simulated) * N_ITEMS) < 1e-4


def test_matches_an_independent_duplicated_row_fit() -> None:
    """Rebuild AlpacaEval's formulation literally (rows duplicated with labels 1 and 0, weights
    y and 1 - y, an explicit design matrix) and minimise it without an analytic gradient."""
    rng = np.random.default_rng(11)
    n = 60
    runs = {}
    for name, quality, stretch in (("r1", 0.5, 1.6), ("r2", -0.3, 0.7)):
        base = rng.integers(200, 2000, n)
        model = (base * stretch * rng.lognormal(0, 0.3, n)).astype(int)
        y = rng.uniform(0, 1, n) * 0.5 + 0.5 * _sigmoid(np.full(n, quality))
        runs[name] = RunPreferences(
            [f"{name}-{i}" for i in range(n)], list(1 + y), list(model), list(base)
        )
    difficulty = {i: float(rng.normal()) for run in runs.values() for i in run.item_ids}

    rows, labels = [], []
    deltas = np.concatenate(
        [np.subtract(r.baseline_lengths, r.model_lengths) for r in runs.values()]
    ).astype(float)
    scale = deltas.std(ddof=1)
    for r, run in enumerate(runs.values()):
        delta = np.subtract(run.baseline_lengths, run.model_lengths).astype(float)
        d = np.array([difficulty[i] for i in run.item_ids])
        x = np.zeros((n, 5))
        x[:, 0] = np.tanh(delta / scale)
        x[:, 1 + r] = 1
        x[:, 3 + r] = d
        rows.append(x)
        labels.append(np.asarray(run.preferences) - 1)
    x, y = np.vstack(rows), np.concatenate(labels)
    x_dup = np.vstack([x, x])
    target = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    weight = np.concatenate([y, 1 - y])

    def loss(w: np.ndarray) -> float:
        p = np.clip(_sigmoid(x_dup @ w), 1e-15, 1 - 1e-15)
        ll = weight * (target * np.log(p) + (1 - target) * np.log(1 - p))
        return (-ll.sum() + L2_PENALTY * float(w @ w)) / y.size

    expected = minimize(loss, np.zeros(5), method="BFGS", options={"gtol": 1e-9}).x
    lc = length_controlled(runs, difficulty)
    got = [
        lc.length_coef,
        lc.quality["r1"],
        lc.quality["r2"],
        lc.difficulty_coef["r1"],
        lc.difficulty_coef["r2"],
    ]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    for r, name in enumerate(runs):
        d = np.array([difficulty[i] for i in runs[name].item_ids])
        assert lc.win_rates[name] == pytest.approx(
            100 * _sigmoid(expected[1 + r] + expected[3 + r] * d).mean(), abs=1e-3
        )


def test_reference_against_itself_is_exactly_50(simulated: dict[str, RunPreferences]) -> None:
    base = simulated["A"].baseline_lengths
    ids = simulated["A"].item_ids
    reference = RunPreferences(ids, [1.5] * N_ITEMS, list(base), list(base))
    assert length_controlled({"ref": reference}).win_rates["ref"] == 50.0

    joint = length_controlled({**simulated, "ref": reference})
    assert joint.win_rates["ref"] == 50.0 and joint.quality["ref"] == 0.0
    # It carries no information about length, so the other runs are unchanged by it.
    alone = length_controlled(simulated)
    for name in simulated:
        assert joint.win_rates[name] == pytest.approx(alone.win_rates[name], abs=1e-9)

    # Identical outputs judged by a symmetric but noisy judge go through the fit: 50 by symmetry.
    symmetric = RunPreferences(
        ids, [1.2 if i % 2 else 1.8 for i in range(N_ITEMS - 1)] + [1.5], list(base), list(base)
    )
    fitted = length_controlled({**simulated, "same_outputs": symmetric})
    assert fitted.win_rates["same_outputs"] == pytest.approx(50.0, abs=1e-6)


def test_full_variant_with_uninformative_difficulty(simulated: dict[str, RunPreferences]) -> None:
    rng = np.random.default_rng(5)
    difficulty = {i: float(rng.normal()) for i in simulated["A"].item_ids}
    full = length_controlled(simulated, difficulty)
    minimal = length_controlled(simulated)
    assert full.variant == "full"
    assert set(full.difficulty_coef) == set(simulated)
    for name in simulated:
        assert full.win_rates[name] == pytest.approx(minimal.win_rates[name], abs=2)
        assert abs(full.difficulty_coef[name]) < 0.3
    assert full.length_coef == pytest.approx(minimal.length_coef, abs=0.1)


def test_full_variant_uses_an_informative_difficulty() -> None:
    rng = np.random.default_rng(8)
    ids = [f"i{k}" for k in range(N_ITEMS)]
    d = rng.normal(size=N_ITEMS)
    lengths = list(rng.integers(500, 3000, N_ITEMS))
    y = rng.beta(8 * _sigmoid(0.3 - 1.2 * d), 8 * (1 - _sigmoid(0.3 - 1.2 * d)))
    run = RunPreferences(ids, list(1 + y), lengths, lengths)
    full = length_controlled({"m": run}, dict(zip(ids, d.tolist(), strict=True)))
    assert full.difficulty_coef["m"] == pytest.approx(-1.2, abs=0.2)
    assert full.length_coef == 0.0  # no length difference at all: nothing to learn


def test_missing_difficulty_names_the_item(simulated: dict[str, RunPreferences]) -> None:
    difficulty = {i: 0.0 for i in simulated["A"].item_ids[1:]}
    with pytest.raises(ValueError, match=r"'item-0'.*'A'"):
        length_controlled({"A": simulated["A"]}, difficulty)
    difficulty["item-0"] = math.nan
    with pytest.raises(ValueError, match=r"'item-0' is not a finite number"):
        length_controlled({"A": simulated["A"]}, difficulty)


def test_failed_verdicts_are_dropped(simulated: dict[str, RunPreferences]) -> None:
    run = simulated["C"]
    holes = replace(
        run, preferences=[None if i % 10 == 0 else p for i, p in enumerate(run.preferences)]
    )
    kept = [i for i in range(N_ITEMS) if i % 10]
    subset = RunPreferences(
        [run.item_ids[i] for i in kept],
        [run.preferences[i] for i in kept],
        [run.model_lengths[i] for i in kept],
        [run.baseline_lengths[i] for i in kept],
    )
    assert length_controlled({"C": holes}).win_rates["C"] == pytest.approx(
        length_controlled({"C": subset}).win_rates["C"], abs=1e-9
    )
    # The legacy draw encoding 0 is a draw here too, as in head_to_head.
    draws = replace(
        run, preferences=[1.5 if k % 5 == 0 else p for k, p in enumerate(run.preferences)]
    )
    legacy = replace(
        run, preferences=[0 if k % 5 == 0 else p for k, p in enumerate(run.preferences)]
    )
    assert length_controlled({"C": legacy}) == length_controlled({"C": draws})
    empty = replace(run, preferences=[None] * N_ITEMS)
    with pytest.raises(ValueError, match="no valid preference"):
        length_controlled({"C": empty})


def test_misaligned_run_and_no_runs_are_rejected() -> None:
    with pytest.raises(ValueError, match="aligned"):
        RunPreferences(["a", "b"], [1.5], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="at least one run"):
        length_controlled({})


def test_deterministic(simulated: dict[str, RunPreferences]) -> None:
    difficulty = {i: float(k % 7) for k, i in enumerate(simulated["A"].item_ids)}
    for diff in (None, difficulty):
        first, second = length_controlled(simulated, diff), length_controlled(simulated, diff)
        assert isinstance(first, LengthControlled)
        assert first == second


def test_full_variant_averages_over_every_item_including_failed_verdicts(
    simulated: dict[str, RunPreferences],
) -> None:
    rng = np.random.default_rng(9)
    run = simulated["B"]
    ids = run.item_ids
    difficulty = {i: float(v) for i, v in zip(ids, rng.normal(size=N_ITEMS), strict=True)}
    holes = replace(
        run, preferences=[None if k % 4 == 0 else p for k, p in enumerate(run.preferences)]
    )
    lc = length_controlled({"B": holes}, difficulty)
    d = np.array([difficulty[i] for i in ids])
    every_item = 100 * _sigmoid(lc.quality["B"] + lc.difficulty_coef["B"] * d).mean()
    assert lc.win_rates["B"] == pytest.approx(every_item, abs=1e-9)


def test_near_separable_runs_still_converge() -> None:
    """A run that wins everything and one that loses everything push the optimum far out; the
    fit must still converge (the L2 penalty keeps it finite) and leave the others alone."""
    rng = np.random.default_rng(1)
    ids = [f"i{k}" for k in range(N_ITEMS)]
    base = rng.integers(100, 5000, N_ITEMS)

    def run(prefs: np.ndarray, model: np.ndarray) -> RunPreferences:
        return RunPreferences(ids, list(prefs), list(model), list(base))

    middle = run(1 + rng.uniform(size=N_ITEMS), base)
    runs = {
        "wins": run(np.full(N_ITEMS, 2.0), base * 2),
        "loses": run(np.full(N_ITEMS, 1.0), base // 3),
        "middle": middle,
    }
    difficulty = {i: float(rng.normal()) for i in ids}
    for diff in (None, difficulty):
        lc = length_controlled(runs, diff)
        assert lc.win_rates["wins"] > 99.9 and lc.win_rates["loses"] < 0.1
        # The middle run has no length difference, so only its own labels set its number.
        alone = length_controlled({"middle": middle}, diff).win_rates["middle"]
        assert lc.win_rates["middle"] == pytest.approx(alone, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# length_controlled: bootstrap confidence intervals


def _width(interval: tuple[float, float]) -> float:
    return interval[1] - interval[0]


def test_bootstrap_ci_of_a_single_run(simulated: dict[str, RunPreferences]) -> None:
    run = simulated["A"]
    assert length_controlled({"A": run}).ci == {}  # only when asked for
    lc = length_controlled({"A": run}, n_resamples=LC_RESAMPLES, seed=3)
    low, high = lc.ci["A"]
    assert low < lc.win_rates["A"] < high
    # Seeded: the same data and seed give the same interval, another seed another one.
    assert length_controlled({"A": run}, n_resamples=LC_RESAMPLES, seed=3).ci == lc.ci
    assert length_controlled({"A": run}, n_resamples=LC_RESAMPLES, seed=4).ci != lc.ci
    # An eighth of the instructions: the interval is much wider (about sqrt(8) times).
    first = slice(0, N_ITEMS // 8)
    fewer = RunPreferences(
        run.item_ids[first], run.preferences[first], run.model_lengths[first],
        run.baseline_lengths[first],
    )  # fmt: skip
    small = length_controlled({"A": fewer}, n_resamples=LC_RESAMPLES, seed=3)
    assert small.ci["A"][0] < small.win_rates["A"] < small.ci["A"][1]
    assert _width(small.ci["A"]) > 2 * _width(lc.ci["A"])


def test_bootstrap_ci_of_a_joint_fit(simulated: dict[str, RunPreferences]) -> None:
    """One draw of instructions per resample for every run, the joint GLM refitted each time."""
    base = simulated["A"].baseline_lengths
    reference = RunPreferences(simulated["A"].item_ids, [1.5] * N_ITEMS, list(base), list(base))
    runs = {**simulated, "ref": reference}
    difficulty = {i: float(k % 7) for k, i in enumerate(simulated["A"].item_ids)}
    for diff in (None, difficulty):
        lc = length_controlled(runs, diff, n_resamples=60, seed=0)
        assert lc.win_rates == length_controlled(runs, diff).win_rates  # the point estimate
        for name in simulated:
            assert lc.ci[name][0] < lc.win_rates[name] < lc.ci[name][1], name
        assert lc.ci["ref"] == (50.0, 50.0)


def test_bootstrap_ci_when_a_resample_misses_every_judged_item() -> None:
    """A run with one valid verdict among 12 items has none in about a third of the resamples;
    those resamples give it no value, the others still give it an interval."""
    ids = [f"i{k}" for k in range(12)]
    lengths = [100 + 10 * k for k in range(12)]
    sparse = RunPreferences(ids, [1.8] + [None] * 11, lengths, [150] * 12)
    dense = RunPreferences(ids, [1.2, 1.9, 1.4, 1.7] * 3, lengths[::-1], [150] * 12)
    lc = length_controlled({"sparse": sparse, "dense": dense}, n_resamples=50, seed=1)
    assert set(lc.ci) == {"sparse", "dense"}
    assert lc.ci["dense"][0] <= lc.win_rates["dense"] <= lc.ci["dense"][1]
