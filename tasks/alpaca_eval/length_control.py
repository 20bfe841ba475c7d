"""AlpacaEval 2's length-controlled win rate, fitted for one model at a time.

LLM judges prefer longer answers, so a model can climb a raw win-rate leaderboard by padding.
AlpacaEval 2 (Dubois et al., 2024, "Length-Controlled AlpacaEval") fits a logistic GLM of each
soft preference and reports the win rate the model would have if its answers were as long as
the baseline's. This module is `alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`
re-done with scikit-learn, step for step, so that the same annotations and the same calibration
file give AlpacaEval's numbers (tests/test_alpaca_metrics.py checks against alpaca-eval itself):

* `length_controlled_v1` (AlpacaEval 2's metric, `length_controlled_winrate`):
  P(model wins) = sigmoid(w_len tanh(std_delta_len) + w_diff instruction_difficulty
  + w_model not_gamed_baseline), no intercept. std_delta_len = (len(baseline output) -
  len(model output)) / their std (ddof=1) over the model's rows, in characters. The model's rows
  are fitted together with the calibration file's gamed-baseline rows (`calibration.py`, weight
  lambda / 2 = 0.1 each, the model's own rows 1), which pulls a model with little length
  variation of its own towards the judge's known length bias, so a short-answer model cannot
  hide it. The prediction sets std_delta_len to 0 (and not_gamed_baseline to 1) over the model's
  rows.
* `length_controlled_minimal` (the fallback without calibration, reported under its own name):
  w_len tanh(std_delta_len) + w_model, fitted on the model's rows alone; its prediction is one
  constant, sigmoid(w_model).

Soft labels enter as AlpacaEval feeds them to scikit-learn: each row twice, label 1 weighted
p = preference - 1 and label 0 weighted 1 - p. The regulariser is L1 (liblinear, random_state
123, no intercept) with C chosen among `LogisticRegressionCV`'s 10 defaults by 5-fold
`GroupKFold` (a row's two copies stay in one fold), scored by AlpacaEval's continuous log loss.
Rows with no preference are left out of the fit but not of the length std or the prediction
(AlpacaEval predicts for every annotation). A model whose outputs are all the baseline's own
gets 50 exactly without a fit, as AlpacaEval does for the baseline.

`lc_standard_error` is AlpacaEval's: 100 x the standard error of the mean (pandas `.sem()`) of
the predicted preferences. It is the spread of the per-instruction predictions, not the
uncertainty of the fit, so the model's win rate also gets a percentile bootstrap CI over
instructions (`bootstrap_ci`): each resample recomputes the length std and refits the GLM, at the
C the full data's cross-validation chose (re-running the cross-validation would cost 50 fits per
resample for a choice that barely moves), with the calibration rows held fixed: they are
AlpacaEval's prior, not a sample of this model.

Two departures, both where AlpacaEval would fail outright: when the length differences do not
vary at all (or there is a single row) the length feature is 0 instead of 0/0; and the minimal
fit needs at least as many judged rows as folds (5), otherwise it gives no number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sklearn
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import make_scorer
from sklearn.model_selection import GroupKFold

from .calibration import Calibration

__all__ = [
    "LC_RESAMPLES",
    "LengthControlled",
    "ModelRows",
    "bootstrap_ci",
    "length_controlled",
]

#: AlpacaEval's `GLM_INFO`: `regularize_to_baseline_lambda` and the folds of its CV.
REGULARIZE_TO_BASELINE_LAMBDA = 0.2
N_SPLITS = 5
RANDOM_STATE = 123

LC_RESAMPLES = 200
"""Bootstrap resamples of the length-controlled win rate's CI (`bootstrap_ci`).

Fewer than the 1000 draws `evalharness.stats.intervals.bootstrap_ci` takes for a mean, because every
resample refits the GLM; the 2.5% and 97.5% quantiles of 200 draws are stable to a fraction of a
point. For 805 instructions and AlpacaEval's 1610 calibration rows the 200 refits take a few
seconds on one core.
"""


@dataclass(frozen=True)
class ModelRows:
    """One model's verdicts against the baseline, one entry per instruction, lists aligned.

    `preferences` are AlpacaEval's encoding (1 the baseline wins, 2 the model wins, 0 or 1.5 a
    draw), None or NaN when there is no verdict. Lengths are in characters (`str.len()`).
    `indexes` are the instructions' AlpacaEval indexes (needed with a calibration only).
    `is_baseline`: the model's outputs are the baseline's own (AlpacaEval: same generator).
    """

    preferences: Sequence[float | None]
    model_lengths: Sequence[int]
    baseline_lengths: Sequence[int]
    indexes: Sequence[int] | None = None
    is_baseline: bool = False

    def __post_init__(self) -> None:
        sizes = {len(self.preferences), len(self.model_lengths), len(self.baseline_lengths)}
        if self.indexes is not None:
            sizes.add(len(self.indexes))
        if len(sizes) != 1:
            raise ValueError("ModelRows lists must be aligned")


@dataclass
class LengthControlled:
    """A model's length-controlled win rate (percent) and how it was fitted.

    `glm` is AlpacaEval's name of the GLM, `C` the inverse L1 strength the cross-validation
    chose (None for the baseline itself, which is not fitted), `weights` the fitted coefficients
    by AlpacaEval's column names.
    """

    glm: str
    win_rate: float
    standard_error: float
    C: float | None
    weights: dict[str, float]


@dataclass
class _Design:
    """The training and prediction matrices, in AlpacaEval's row and column order."""

    columns: list[str]
    x_train: np.ndarray
    y_train: np.ndarray  # soft labels in [0, 1]
    weight: np.ndarray | None  # per training row; None = all 1 (no calibration rows)
    x_test: np.ndarray


def _preferences(rows: ModelRows) -> np.ndarray:
    """The preferences as floats, None as NaN."""
    return pd.Series(list(rows.preferences), dtype="float64").to_numpy()


def _judged(rows: ModelRows) -> int:
    return int(np.sum(~np.isnan(_preferences(rows))))


def _fittable(rows: ModelRows, calibration: Calibration | None) -> bool:
    """A verdict to fit, and (without calibration rows) one per cross-validation fold."""
    judged = _judged(rows)
    return judged > 0 and (calibration is not None or judged >= N_SPLITS)


def _design(rows: ModelRows, calibration: Calibration | None) -> _Design:
    """AlpacaEval's `_get_featurized_data` and `make_dmatrix_for_model`, without patsy."""
    delta = pd.Series(np.asarray(rows.baseline_lengths, dtype=np.int64)) - pd.Series(
        np.asarray(rows.model_lengths, dtype=np.int64)
    )
    scale = delta.std()
    if np.isfinite(scale) and scale > 0:
        std_delta_len = (delta / scale).to_numpy(dtype=float)
    else:  # no length variation (or one row): nothing to learn about length
        std_delta_len = np.zeros(len(delta))
    preference = pd.Series(_preferences(rows)).replace({0.0: 1.5}).to_numpy() - 1
    ones = np.ones(len(delta))
    if calibration is None:
        columns = ["np.tanh(std_delta_len)", "not_gamed_baseline.astype(float)"]
        x = np.column_stack([np.tanh(std_delta_len), ones])
        keep = ~np.isnan(preference)
        return _Design(
            columns=columns,
            x_train=x[keep],
            y_train=preference[keep],
            weight=None,
            x_test=np.column_stack([np.zeros(len(delta)), ones]),
        )
    if rows.indexes is None:
        raise ValueError("length_controlled_v1 needs the instructions' AlpacaEval indexes")
    difficulty = calibration.difficulty(list(rows.indexes))
    columns = [
        "np.tanh(std_delta_len)",
        "instruction_difficulty",
        "not_gamed_baseline.astype(float)",
    ]
    gamed = calibration.not_gamed_baseline
    x = np.vstack(
        [
            np.column_stack(
                [
                    np.tanh(calibration.std_delta_len),
                    calibration.instruction_difficulty,
                    gamed.astype(float),
                ]
            ),
            np.column_stack([np.tanh(std_delta_len), difficulty, ones]),
        ]
    )
    y = np.concatenate([calibration.preference, preference])
    not_gamed = np.concatenate([gamed, np.ones(len(delta), dtype=bool)])
    # AlpacaEval's expression, kept as written so the weights are bit for bit the same; divided
    # by 2 because there are two gamed baselines.
    weight = (
        not_gamed.astype(float) + (REGULARIZE_TO_BASELINE_LAMBDA * (~not_gamed)).astype(float) / 2
    )
    keep = ~np.isnan(y)
    return _Design(
        columns=columns,
        x_train=x[keep],
        y_train=y[keep],
        weight=weight[keep],
        x_test=np.column_stack([np.zeros(len(delta)), difficulty, ones]),
    )


def _logloss_continuous(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    true_prob: np.ndarray,
    true_sample_weight: np.ndarray | None = None,
) -> float:
    """AlpacaEval's CV score (`logloss_continuous`): the soft-label log loss of the duplicated
    rows, each weighted by its true sample weight, averaged over rows."""
    y_true = np.where(y_true == 1, true_prob, 1 - true_prob)
    epsilon = 1e-15
    y_pred = np.clip(y_pred, epsilon, 1 - epsilon)
    losses = y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred)
    if true_sample_weight is not None:
        losses = losses * true_sample_weight
    return float(-np.mean(losses))


@dataclass
class _Duplicated:
    """Every training row twice (label 1, then label 0), as AlpacaEval's `fit_LogisticRegressionCV`
    builds it: `sample_weight` = true probability x row weight, `group` = the original row."""

    x: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray
    true_prob: np.ndarray
    true_sample_weight: np.ndarray | None
    group: np.ndarray


def _duplicate(design: _Design) -> _Duplicated:
    n = design.y_train.size
    true_prob = np.concatenate([design.y_train, 1 - design.y_train])
    true_weight = None if design.weight is None else np.concatenate([design.weight, design.weight])
    return _Duplicated(
        x=np.vstack([design.x_train, design.x_train]),
        y=np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]),
        sample_weight=true_prob if true_weight is None else true_prob * true_weight,
        true_prob=true_prob,
        true_sample_weight=true_weight,
        group=np.concatenate([np.arange(n), np.arange(n)]),
    )


def _fit_cv(data: _Duplicated) -> LogisticRegressionCV:
    """`LogisticRegressionCV` as AlpacaEval configures it (L1 written as `l1_ratios=(1,)`, the
    spelling that replaces the deprecated `penalty="l1"`; liblinear solves the same problem)."""
    scorer = make_scorer(
        _logloss_continuous, response_method="predict_proba", greater_is_better=False
    )
    # Metadata routing passes the groups to GroupKFold and the true probabilities and weights
    # to the scorer; a context, so that sklearn's global configuration is left as it was.
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(
            l1_ratios=(1.0,),
            cv=GroupKFold(n_splits=N_SPLITS),
            scoring=scorer,
            solver="liblinear",
            fit_intercept=False,
            random_state=RANDOM_STATE,
            use_legacy_attributes=False,
        )
        model.fit(
            data.x,
            data.y,
            sample_weight=data.sample_weight,
            groups=data.group,
            true_sample_weight=data.true_sample_weight,
            true_prob=data.true_prob,
        )
    return model


def _fit_at(data: _Duplicated, c: float) -> LogisticRegression:
    """The same L1 logistic regression at a fixed C (the bootstrap's refits)."""
    model = LogisticRegression(
        C=c,
        l1_ratio=1.0,
        solver="liblinear",
        fit_intercept=False,
        random_state=RANDOM_STATE,
    )
    return model.fit(data.x, data.y, sample_weight=data.sample_weight)


def length_controlled(
    rows: ModelRows, calibration: Calibration | None = None
) -> LengthControlled | None:
    """The model's length-controlled win rate: `length_controlled_v1` with a calibration,
    `length_controlled_minimal` without (see the module docstring).

    None when there is nothing to fit: no verdict at all, or (minimal only) fewer judged rows
    than cross-validation folds.
    """
    design = _design(rows, calibration)
    glm = "length_controlled_minimal" if calibration is None else "length_controlled_v1"
    if rows.is_baseline:  # AlpacaEval's answer for the baseline itself: 0.5 everywhere, unfitted
        weights = dict.fromkeys(design.columns, 0.0)
        return LengthControlled(glm, win_rate=50.0, standard_error=0.0, C=None, weights=weights)
    if not _fittable(rows, calibration):
        return None
    model = _fit_cv(_duplicate(design))
    predicted = model.predict_proba(design.x_test)[:, 1]
    return LengthControlled(
        glm=glm,
        win_rate=float(predicted.mean() * 100),
        standard_error=float(pd.Series(predicted).sem() * 100),
        C=float(np.ravel(model.C_)[0]),
        weights=dict(zip(design.columns, map(float, model.coef_[0]), strict=True)),
    )


def bootstrap_ci(
    rows: ModelRows,
    calibration: Calibration | None,
    fit: LengthControlled,
    *,
    n_resamples: int = LC_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of `fit.win_rate` over the model's instructions.

    Drawn as `evalharness.stats.intervals.bootstrap_ci` draws (`numpy.random.default_rng(seed)`,
    n indices with replacement per resample). Each resample is the model's rows as drawn (an
    instruction drawn twice counts twice, in the length std, the fit and the mean), fitted with the
    calibration rows at `fit.C`. A resample with fewer judged rows than the fit needs has no
    value; the interval uses the others. The baseline itself is (50, 50).
    """
    n = len(rows.preferences)
    if fit.C is None:
        return (fit.win_rate, fit.win_rate) if n else None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    values = np.full(n_resamples, np.nan)
    preferences = list(rows.preferences)
    for b, draw in enumerate(draws):
        resample = ModelRows(
            preferences=[preferences[i] for i in draw],
            model_lengths=[rows.model_lengths[i] for i in draw],
            baseline_lengths=[rows.baseline_lengths[i] for i in draw],
            indexes=None if rows.indexes is None else [rows.indexes[i] for i in draw],
        )
        if not _fittable(resample, calibration):
            continue
        design = _design(resample, calibration)
        model = _fit_at(_duplicate(design), fit.C)
        values[b] = model.predict_proba(design.x_test)[:, 1].mean() * 100
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)
