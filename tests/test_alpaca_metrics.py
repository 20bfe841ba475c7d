"""AlpacaEval metrics: the raw head-to-head rule, and the length-controlled win rate compared
with alpaca-eval's own `get_length_controlled_winrate` on the same annotations and the same
(synthetic) calibration file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from alpaca_reference import alpaca_eval_lc, write_calibration

from evalharness.errors import InputError
from evalharness.tasks.alpaca_eval.calibration import (
    Calibration,
    alpaca_eval_indexes,
    read_calibration,
)
from evalharness.tasks.alpaca_eval.length_control import (
    ModelRows,
    bootstrap_ci,
    length_controlled,
)
from evalharness.tasks.alpaca_eval.metrics import head_to_head

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
# length_controlled: equal to alpaca-eval's get_length_controlled_winrate

N_ITEMS = 805  # the size of AlpacaEval
BASELINE = "gpt4_1106_preview"


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibration(tmp_path_factory.mktemp("calibration") / "df_gamed.csv")


def simulated_model(kind: str, seed: int = 7) -> tuple[ModelRows, pd.DataFrame]:
    """One model's rows and the same rows as AlpacaEval annotations (with an `index` column).

    A length-biased judge (soft preferences around sigmoid(quality - 1.3 tanh(delta / 600) +
    difficulty-like noise)); `verbose` answers are ~2.5x the baseline's length, `short` (the
    adversarial "gamed" model) ~a fifth, `subset` answered 300 items in a shuffled order, and
    `baseline` is the baseline itself. Some verdicts are missing, draws (1.5) and legacy draws (0).
    """
    rng = np.random.default_rng(seed)
    indexes = np.arange(N_ITEMS)
    if kind == "subset":
        indexes = rng.permutation(N_ITEMS)[:300]
    n = indexes.size
    baseline = rng.lognormal(np.log(1500), 0.5, n).round().astype(int)
    factor = {"verbose": 2.5, "short": 0.2}.get(kind, 1.0)
    lengths = (baseline * factor * rng.lognormal(0.0, 0.3, n)).round().astype(int) + 1
    quality = {"short": 0.6, "verbose": -0.2}.get(kind, 0.3)
    logit = quality - 1.3 * np.tanh((baseline - lengths) / 600) + rng.normal(0, 0.8, n)
    preferences: list[Any] = list(1 + 1 / (1 + np.exp(-logit)))
    preferences[3], preferences[11], preferences[17] = None, 1.5, 0
    if kind == "baseline":
        lengths, preferences = baseline.copy(), [1.5] * n
    name = BASELINE if kind == "baseline" else kind
    annotations = pd.DataFrame(
        {
            "instruction": [f"instruction {i}" for i in indexes],
            "output_1": ["b" * int(k) for k in baseline],
            "generator_1": BASELINE,
            "output_2": ["m" * int(k) for k in lengths],
            "generator_2": name,
            "preference": [np.nan if p is None else p for p in preferences],
            "index": indexes,
        }
    )
    rows = ModelRows(
        preferences=preferences,
        model_lengths=[int(k) for k in lengths],
        baseline_lengths=[int(k) for k in baseline],
        indexes=[int(i) for i in indexes],
        is_baseline=kind == "baseline",
    )
    return rows, annotations


MODELS = ("balanced", "verbose", "short", "subset", "baseline")


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("glm", ["length_controlled_v1", "length_controlled_minimal"])
def test_equals_alpaca_eval(calibration_file: Path, kind: str, glm: str) -> None:
    rows, annotations = simulated_model(kind)
    expected = alpaca_eval_lc(annotations, calibration_file, glm)
    calibration = read_calibration(calibration_file) if glm == "length_controlled_v1" else None
    fit = length_controlled(rows, calibration)
    assert fit is not None and fit.glm == glm
    assert fit.win_rate == pytest.approx(expected["length_controlled_winrate"], abs=1e-9)
    assert fit.standard_error == pytest.approx(expected["lc_standard_error"], abs=1e-9)
    if kind == "baseline":
        assert fit.win_rate == 50.0 and fit.standard_error == 0.0


def test_equals_alpaca_eval_when_the_file_lists_items_out_of_order(tmp_path: Path) -> None:
    """AlpacaEval reads item g's difficulty from row g of the file, whatever its `index`."""
    path = write_calibration(tmp_path / "df_gamed.csv", seed=3, first_block_in_order=False)
    calibration = read_calibration(path)
    assert not calibration.rows_in_index_order
    rows, annotations = simulated_model("balanced", seed=11)
    expected = alpaca_eval_lc(annotations, path)
    fit = length_controlled(rows, calibration)
    assert fit is not None
    assert fit.win_rate == pytest.approx(expected["length_controlled_winrate"], abs=1e-9)
    assert fit.standard_error == pytest.approx(expected["lc_standard_error"], abs=1e-9)


def test_the_calibration_rows_pull_a_short_model_towards_the_judge_bias(
    calibration_file: Path,
) -> None:
    """Fitted alone, a model whose answers are all short cannot tell length from quality; the
    gamed-baseline rows give the judge's length bias, so v1 moves away from the minimal fit."""
    rows, _ = simulated_model("short")
    v1 = length_controlled(rows, read_calibration(calibration_file))
    minimal = length_controlled(rows, None)
    assert v1 is not None and minimal is not None
    assert abs(v1.win_rate - minimal.win_rate) > 1.0
    assert v1.weights["np.tanh(std_delta_len)"] != 0.0


def test_bootstrap_ci(calibration_file: Path) -> None:
    calibration = read_calibration(calibration_file)
    rows, _ = simulated_model("subset")
    fit = length_controlled(rows, calibration)
    assert fit is not None and fit.C is not None
    low, high = bootstrap_ci(rows, calibration, fit, n_resamples=40, seed=3)
    assert low < fit.win_rate < high and high - low < 20
    assert bootstrap_ci(rows, calibration, fit, n_resamples=40, seed=3) == (low, high)
    assert bootstrap_ci(rows, calibration, fit, n_resamples=40, seed=4) != (low, high)
    baseline_rows, _ = simulated_model("baseline")
    itself = length_controlled(baseline_rows, calibration)
    assert itself is not None
    assert bootstrap_ci(baseline_rows, calibration, itself, n_resamples=40) == (50.0, 50.0)


def test_nothing_to_fit_gives_no_number(calibration_file: Path) -> None:
    calibration = read_calibration(calibration_file)
    none_judged = ModelRows([None] * 6, [10] * 6, [20] * 6, list(range(6)))
    assert length_controlled(none_judged, calibration) is None
    assert length_controlled(none_judged, None) is None
    # With calibration rows one judged row can be fitted; alone, the CV needs one per fold.
    four = ModelRows([1.2, 1.9, 1.4, 1.7], [10, 40, 20, 30], [20] * 4, [0, 1, 2, 3])
    assert length_controlled(four, calibration) is not None
    assert length_controlled(four, None) is None


# ---------------------------------------------------------------------------------------------
# the calibration file and AlpacaEval's item index


def test_calibration_records_what_it_read(calibration_file: Path) -> None:
    calibration = read_calibration(calibration_file)
    assert isinstance(calibration, Calibration) and calibration.rows_in_index_order
    assert calibration.preference.size == 2 * N_ITEMS
    described = calibration.describe()
    assert described["rows"] == 2 * N_ITEMS and len(described["sha256"]) == 64
    with pytest.raises(InputError, match="no instruction difficulty for AlpacaEval item 805"):
        calibration.difficulty([0, 805])


def _broken(tmp_path: Path, calibration_file: Path, edit: Any) -> Path:
    frame = pd.read_csv(calibration_file)
    path = tmp_path / "df_gamed.csv"
    edit(frame).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns=["std_delta_len"]), "missing column 'std_delta_len'"),
        (lambda f: f.assign(not_gamed_baseline="no"), "'not_gamed_baseline' must be True/False"),
        (
            lambda f: f.assign(instruction_difficulty=["hard"] + [0.0] * (len(f) - 1)),
            "line 2: instruction_difficulty 'hard' is not a number",
        ),
        (lambda f: f.iloc[:0], "no rows"),
    ],
)
def test_a_bad_calibration_file_is_a_one_line_error(
    tmp_path: Path, calibration_file: Path, edit: Any, message: str
) -> None:
    path = _broken(tmp_path, calibration_file, edit)
    with pytest.raises(InputError) as error:
        read_calibration(path)
    assert str(path) in str(error.value) and message in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    with pytest.raises(InputError, match="alpaca_eval.calibration: .*absent.csv: no such file"):
        read_calibration(tmp_path / "absent.csv")


def test_alpaca_eval_indexes_are_positions_in_the_eval_set() -> None:
    from conftest import shared_data

    from evalharness.tasks.alpaca_eval.loader import items_from_file
    from evalharness.tasks.alpaca_eval.task import sample_id

    items = items_from_file(shared_data("alpaca_eval/eval_set.jsonl"))
    ids = [sample_id(i["instruction"]) for i in items]
    assert alpaca_eval_indexes(ids) == list(range(N_ITEMS))
    assert alpaca_eval_indexes([ids[9], ids[2]]) == [9, 2]  # a subset, in any order
    assert alpaca_eval_indexes([ids[0], sample_id("not an AlpacaEval instruction")]) is None
    assert alpaca_eval_indexes([]) is None
