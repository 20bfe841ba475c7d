"""AlpacaEval win rates: the raw head-to-head numbers and the length-controlled win rate.

`head_to_head` restates AlpacaEval's own rule (`alpaca_eval.metrics.get_winrate`) step for step,
with the same pandas reductions (`.mean()`, `.sem()`), so that preferences taken from AlpacaEval's
published annotations give back its published leaderboard numbers, quirks included.

`length_controlled` follows AlpacaEval's "length_controlled_v1" GLM (Dubois et al., 2024,
"Length-Controlled AlpacaEval"): LLM judges prefer longer answers, so a model can climb the raw
leaderboard by padding. The GLM explains each preference by a length term, an optional instruction
difficulty term and a per-model quality constant, then reports the win rate the model would have
if its answers were as long as the baseline's (length term set to 0). Two deliberate departures:

* AlpacaEval also fits each model together with two "gamed" baselines (the reference answers made
  deliberately verbose and concise) to regularise towards the baseline; that needs the gamed
  annotations for the judge in use, which we do not have, so it is left out.
* Several runs can be fitted jointly with one shared length coefficient. Length bias belongs to
  the judge, not to the model, so pooling every run judged by the same judge estimates it from
  far more variation in length than one model provides; with a single run one gets the ordinary
  per-model fit. AlpacaEval picks the L1 strength by cross-validation; a fixed tiny L2 penalty is
  used here instead (see `L2_PENALTY`), which keeps the fit deterministic and cheap.

AlpacaEval reports no interval for the length-controlled win rate; here it gets a percentile
bootstrap over instructions that refits the GLM on every resample (`LC_RESAMPLES`,
`_bootstrap`), jointly for runs fitted together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize

__all__ = [
    "L2_PENALTY",
    "LC_RESAMPLES",
    "LengthControlled",
    "RunPreferences",
    "head_to_head",
    "length_controlled",
]

L2_PENALTY = 1e-6
"""Weight of `L2_PENALTY * ||w||^2` added to the *summed* log-loss of the length-controlled GLM.

Without it the optimum is at infinity when a run wins (or loses) every item, as a tiny model
against a strong baseline easily does, or when the difficulty feature separates its wins from
its losses, and the optimiser would stop wherever its tolerance happened to trigger. With it the
objective is strictly convex, so the optimum is unique and finite (a run that wins everything
comes out at about 99.9999, not 100), and collinear features (e.g. a constant difficulty) are
resolved deterministically. Against a sum over hundreds of rows, 1e-6 moves an ordinary fit by
orders of magnitude less than the noise in any win rate.

It is scaled to the sum rather than the mean so that the penalty a run's own constants feel does
not depend on how many other runs are pooled with it: pooling then changes a run's number only
through the shared length coefficient (and the pooled length scale), as intended.
"""


LC_RESAMPLES = 200
"""Bootstrap resamples for the CI of the length-controlled win rate (`length_controlled`).

Fewer than the 1000 `evalharness.stats.bootstrap_ci` draws for a mean, because every resample
refits the GLM: started from the full-data optimum a refit of one run on 805 instructions takes
about a millisecond, so 200 resamples cost well under a second per run and a few seconds for a
pool of ten runs, while the 2.5% and 97.5% quantiles of 200 draws are already stable to a
fraction of a point.
"""


def _as_float_series(preferences: Sequence[float | None]) -> pd.Series:
    """Float series with None as NaN; AlpacaEval builds the same from a float column."""
    return pd.Series(list(preferences), dtype="float64")


def head_to_head(preferences: Sequence[float | None]) -> dict[str, Any]:
    """Win rate of a candidate against the baseline, computed exactly as AlpacaEval does.

    A preference is AlpacaEval's encoding of a verdict: 1 the baseline wins, 2 the candidate
    wins, values in between are a weighted judge's expected outcome, and 1.5 (or the legacy 0) a
    draw. The rule, in AlpacaEval's order:

    1. `n_draws` counts values equal to 1.5 or 0 *before* anything is dropped;
    2. 0 becomes 1.5, then values that are NaN/None or outside [1, 2] are dropped as "not
       preferences"; `n_total` is what is left;
    3. with x = preference - 1: `win_rate` = 100 mean(x), `standard_error` = 100 std(x, ddof=1) /
       sqrt(n) (pandas `.sem()`), `n_wins` = #(x > 0.5), `n_wins_base` = #(x < 0.5);
    4. `discrete_win_rate` is AlpacaEval's zero-one rule: 1.5 becomes a draw, every other value
       is rounded to the nearest integer (half to even, as pandas rounds), then the same drop and
       mean are applied, so it equals 100 (#wins + #draws / 2) / n over the rounded values.

    The zero-one rule rounds *before* it drops, so an out-of-range 2.5 rounds to 2 and counts as
    a win, and values in (-0.5, 0.5] round to 0 and count as draws; AlpacaEval does the same and
    the judges here never produce such values, so the quirk is kept rather than "fixed" away from
    the published numbers.

    Returns plain Python numbers. Rates are None when nothing is left to average
    (`n_total` == 0), and `standard_error` is also None for a single item, where pandas gives NaN
    (NaN is not valid JSON).
    """
    raw = _as_float_series(preferences)
    n_draws = int(((raw == 1.5) | (raw == 0)).sum())

    continuous = raw.replace({0.0: 1.5})
    x = continuous[(continuous >= 1) & (continuous <= 2)] - 1
    n_total = len(x)

    discrete = raw.replace({1.5: 0.0}).round().replace({0.0: 1.5})
    x_discrete = discrete[(discrete >= 1) & (discrete <= 2)] - 1

    def _finite_or_none(value: float) -> float | None:
        return None if math.isnan(value) else float(value)

    return {
        "win_rate": _finite_or_none(x.mean() * 100) if n_total else None,
        "standard_error": _finite_or_none(x.sem() * 100) if n_total else None,
        "n_wins": int((x > 0.5).sum()),
        "n_wins_base": int((x < 0.5).sum()),
        "n_draws": n_draws,
        "n_total": n_total,
        "discrete_win_rate": (
            _finite_or_none(x_discrete.mean() * 100) if len(x_discrete) else None
        ),
    }


@dataclass
class RunPreferences:
    """One run's verdicts against the baseline, one entry per item, all lists aligned.

    Lengths are in characters, as AlpacaEval measures them (`str.len()` of the two outputs).
    A None or NaN preference is a failed verdict; its item still counts when the
    length-controlled win rate is averaged over the run's items (see `length_controlled`).
    """

    item_ids: list[str]
    preferences: list[float | None]
    model_lengths: list[int]
    baseline_lengths: list[int]

    def __post_init__(self) -> None:
        sizes = {
            "item_ids": len(self.item_ids),
            "preferences": len(self.preferences),
            "model_lengths": len(self.model_lengths),
            "baseline_lengths": len(self.baseline_lengths),
        }
        if len(set(sizes.values())) != 1:
            raise ValueError(f"RunPreferences lists must be aligned, got lengths {sizes}")


@dataclass
class LengthControlled:
    """Result of a (joint) length-controlled fit.

    `win_rates` are in percent. `length_coef` multiplies tanh(delta_len / std(delta_len)) with
    delta_len = baseline length - model length, so a judge that favours longer answers gets a
    negative coefficient. `quality` is each run's constant on the logit scale (0 means on a par
    with the baseline), `difficulty_coef` each run's difficulty slope in the "full" variant and
    None in the "minimal" one.
    """

    win_rates: dict[str, float]
    length_coef: float
    quality: dict[str, float]
    difficulty_coef: dict[str, float] | None
    variant: str
    n_runs: int
    #: run -> (low, high) percentile bootstrap interval of its win rate (see `_bootstrap`);
    #: empty unless `length_controlled` was asked for resamples.
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings for large |z|."""
    return np.exp(-np.logaddexp(0.0, -z))


def _is_reference_like(preferences: np.ndarray, delta: np.ndarray) -> bool:
    """The baseline judged against itself: same lengths everywhere and every verdict a draw.

    AlpacaEval reports exactly 50 for the baseline without fitting anything; such a run carries
    no information about the judge's length bias either, so it is left out of the fit (and out
    of the pooled length std) and the other runs' numbers do not change when it is included.
    """
    present = preferences[~np.isnan(preferences)]
    return present.size > 0 and bool(np.all(delta == 0)) and bool(np.all(present == 1.5))


def length_controlled(
    runs: Mapping[str, RunPreferences],
    difficulty: Mapping[str, float] | None = None,
    *,
    n_resamples: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
) -> LengthControlled:
    """Length-controlled win rates of one or more runs judged by the same judge against the same
    baseline, and with `n_resamples` > 0 their bootstrap confidence intervals.

    Model, for item i of run r with soft label y = preference - 1 in [0, 1] (0 becomes 1.5 first,
    as in `head_to_head`; rows with no verdict or a value outside [1, 2] are dropped):

        P(candidate wins) = sigmoid(length_coef * tanh(delta_i / s)
                                    + quality_r [+ difficulty_coef_r * difficulty_i])

    with delta_i = baseline length - model length and s the sample std (ddof=1) of delta over
    every fitted row of every run (when those deltas do not vary at all the length feature is 0
    and `length_coef` comes out 0). There is no intercept: quality_r plays that role per run.
    The soft labels enter as AlpacaEval feeds them to scikit-learn, each row duplicated with
    label 1 weighted y and label 0 weighted 1 - y; that weighted log-loss equals the
    cross-entropy -[y log p + (1 - y) log(1 - p)], which is what is computed. The objective is its
    sum over rows plus `L2_PENALTY * ||w||^2` (see there), minimised by L-BFGS-B with the
    analytic gradient and polished by Newton steps (see `_fit`).

    The length-controlled win rate of run r is 100 times the mean over all of its items (also
    those whose verdict failed, as AlpacaEval predicts for every annotation row) of
    sigmoid(quality_r [+ difficulty_coef_r * difficulty_i]), i.e. the prediction with the
    length term at 0, as if the run's answers were as long as the baseline's.

    `difficulty` (instruction id -> difficulty) selects the "full" variant; it must cover every
    item id of every run, otherwise ValueError names the first missing item. Without it the
    "minimal" variant fits length and quality only.

    A run identical to the baseline (all lengths equal, every verdict 1.5) gets exactly 50, as
    in AlpacaEval; see `_is_reference_like`. More generally, a run whose outputs are the
    baseline's outputs has delta = 0 on every item, so its length term vanishes and its win rate
    is the mean of its soft labels: 50 when the judge is symmetric, which is what a caller
    checking the harness should pass.

    The confidence intervals (`LengthControlled.ci`) are a percentile bootstrap over
    instructions that refits the whole GLM on every resample; see `_bootstrap`. With the
    default `n_resamples=0` none is computed and `ci` is empty.
    """
    if not runs:
        raise ValueError("length_controlled needs at least one run")
    data = _prepare(runs, difficulty)
    fit = _solve(data)
    if n_resamples > 0:
        fit.ci = _bootstrap(data, fit, n_resamples=n_resamples, seed=seed, confidence=confidence)
    return fit


@dataclass
class _Arrays:
    """The fit's inputs as arrays, one entry per item of each run, in the run's own order.

    `items[key][k]` is the position of the run's k-th item id among the item ids of every run
    (in order of first appearance), which is what the bootstrap draws: one instruction is one
    draw for every run that answered it, as the runs share their instructions.
    """

    keys: list[str]
    prefs: dict[str, np.ndarray]
    deltas: dict[str, np.ndarray]
    diffs: dict[str, np.ndarray] | None
    items: dict[str, np.ndarray]
    n_items: int

    def resampled(self, counts: np.ndarray) -> _Arrays:
        """The runs as a bootstrap resample has them: instruction j repeated `counts[j]` times."""
        take = {
            key: np.repeat(np.arange(self.items[key].size), counts[self.items[key]])
            for key in self.keys
        }

        def pick(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {key: arrays[key][take[key]] for key in self.keys}

        return _Arrays(
            keys=self.keys,
            prefs=pick(self.prefs),
            deltas=pick(self.deltas),
            diffs=pick(self.diffs) if self.diffs is not None else None,
            items=pick(self.items),
            n_items=self.n_items,
        )


def _prepare(runs: Mapping[str, RunPreferences], difficulty: Mapping[str, float] | None) -> _Arrays:
    """Checks the runs and the difficulty and turns them into arrays (see `_Arrays`)."""
    keys = list(runs)
    positions: dict[str, int] = {}
    prefs: dict[str, np.ndarray] = {}
    deltas: dict[str, np.ndarray] = {}
    diffs: dict[str, np.ndarray] = {}
    items: dict[str, np.ndarray] = {}
    for key in keys:
        run = runs[key]
        prefs[key] = _as_float_series(run.preferences).replace({0.0: 1.5}).to_numpy()
        deltas[key] = np.asarray(run.baseline_lengths, dtype=float) - np.asarray(
            run.model_lengths, dtype=float
        )
        items[key] = np.asarray(
            [positions.setdefault(item, len(positions)) for item in run.item_ids], dtype=np.intp
        )
        if difficulty is not None:
            missing = [item for item in run.item_ids if item not in difficulty]
            if missing:
                raise ValueError(
                    f"difficulty has no value for item {missing[0]!r} of run {key!r} "
                    f"({len(missing)} item(s) missing)"
                )
            diffs[key] = np.asarray([difficulty[item] for item in run.item_ids], dtype=float)
            if not np.all(np.isfinite(diffs[key])):
                bad = run.item_ids[int(np.argmin(np.isfinite(diffs[key])))]
                raise ValueError(f"difficulty of item {bad!r} is not a finite number")
    return _Arrays(
        keys=keys,
        prefs=prefs,
        deltas=deltas,
        diffs=diffs if difficulty is not None else None,
        items=items,
        n_items=len(positions),
    )


def _solve(
    data: _Arrays, start: LengthControlled | None = None, *, strict: bool = True
) -> LengthControlled:
    """Fit the GLM of `length_controlled` to `data`.

    `start` (a fit of the same runs) is where the optimiser starts instead of 0: a bootstrap
    resample's optimum is close to the full data's, so it converges in a few steps. With
    `strict` a run with no valid preference is an error; without it (a resample that drew
    none of the run's judged instructions) the run is left out and has no win rate.
    """
    keys = data.keys
    prefs, deltas, diffs = data.prefs, data.deltas, data.diffs
    has_difficulty = diffs is not None
    reference_like = [key for key in keys if _is_reference_like(prefs[key], deltas[key])]
    fitted = []
    run_index, labels, delta_rows, diff_rows = [], [], [], []
    for key in keys:
        if key in reference_like:
            continue
        keep = (prefs[key] >= 1) & (prefs[key] <= 2)
        if not keep.any():
            if strict:
                raise ValueError(f"run {key!r} has no valid preference to fit")
            continue
        run_index.append(np.full(int(keep.sum()), len(fitted)))
        fitted.append(key)
        labels.append(prefs[key][keep] - 1)
        delta_rows.append(deltas[key][keep])
        if diffs is not None:
            diff_rows.append(diffs[key][keep])

    length_coef = 0.0
    quality: dict[str, float] = {}
    difficulty_coef: dict[str, float] = {}
    if fitted:
        delta_all = np.concatenate(delta_rows)
        scale = float(np.std(delta_all, ddof=1)) if delta_all.size > 1 else float("nan")
        # No spread in length (or a single row): nothing to learn about length, feature is 0.
        length_feature = (
            np.tanh(delta_all / scale)
            if math.isfinite(scale) and scale > 0
            else np.zeros_like(delta_all)
        )
        initial = None
        if start is not None:
            slopes = start.difficulty_coef or {}
            initial = np.array(
                [start.length_coef]
                + [start.quality.get(key, 0.0) for key in fitted]
                + ([slopes.get(key, 0.0) for key in fitted] if has_difficulty else [])
            )
        weights = _fit(
            run_index=np.concatenate(run_index),
            y=np.concatenate(labels),
            length_feature=length_feature,
            difficulty=np.concatenate(diff_rows) if diffs is not None else None,
            n_runs=len(fitted),
            start=initial,
        )
        length_coef = float(weights[0])
        for r, key in enumerate(fitted):
            quality[key] = float(weights[1 + r])
            if has_difficulty:
                difficulty_coef[key] = float(weights[1 + len(fitted) + r])

    win_rates: dict[str, float] = {}
    for key in keys:
        if key in reference_like:
            quality[key] = 0.0
            if has_difficulty:
                difficulty_coef[key] = 0.0
            win_rates[key] = 50.0
            continue
        if key not in quality:
            continue  # left out of a resample (see above)
        logits = np.full(len(prefs[key]), quality[key])
        if diffs is not None:
            logits = logits + difficulty_coef[key] * diffs[key]
        win_rates[key] = float(100 * _sigmoid(logits).mean())

    return LengthControlled(
        win_rates=win_rates,
        length_coef=length_coef,
        quality={key: quality[key] for key in keys if key in quality},
        difficulty_coef=(
            {key: difficulty_coef[key] for key in keys if key in difficulty_coef}
            if has_difficulty
            else None
        ),
        variant="full" if has_difficulty else "minimal",
        n_runs=len(keys),
    )


def _bootstrap(
    data: _Arrays,
    fit: LengthControlled,
    *,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of every run's length-controlled win rate.

    The unit resampled is the instruction, as in `evalharness.stats.bootstrap_ci` (same seeding:
    `numpy.random.default_rng(seed)`, `n_resamples` draws of n indices with replacement, and
    the `confidence` quantiles of the resampled statistics). Each resample refits the whole GLM
    (length scale s, length coefficient, every run's quality and slope), started from the
    full-data optimum, so the interval includes the uncertainty of the length correction and
    not only that of the mean. Runs fitted together share the draws: an instruction drawn
    twice counts twice for every run that answered it, which keeps the shared length
    coefficient's uncertainty in every run's interval. A run that a resample leaves without a
    valid preference has no value there; its interval uses the other resamples. A
    reference-like run is 50 in every resample, so its interval is (50, 50).
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, data.n_items, size=(n_resamples, data.n_items))
    values = np.full((n_resamples, len(data.keys)), np.nan)
    for b, draw in enumerate(draws):
        counts = np.bincount(draw, minlength=data.n_items)
        refit = _solve(data.resampled(counts), start=fit, strict=False)
        values[b] = [refit.win_rates.get(key, np.nan) for key in data.keys]
    alpha = (1.0 - confidence) / 2.0
    intervals: dict[str, tuple[float, float]] = {}
    for column, key in enumerate(data.keys):
        finite = values[:, column][np.isfinite(values[:, column])]
        if finite.size:
            low, high = np.quantile(finite, [alpha, 1.0 - alpha])
            intervals[key] = (float(low), float(high))
    return intervals


def _fit(
    *,
    run_index: np.ndarray,
    y: np.ndarray,
    length_feature: np.ndarray,
    difficulty: np.ndarray | None,
    n_runs: int,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Minimise the penalised soft-label log-loss; returns [length, quality..., slope...].

    The design matrix is never built: the per-run columns are indicator (and indicator times
    difficulty) columns, so their products with the weights and residuals are gathers and
    bincounts, which keeps the cost linear in the number of rows however many runs are pooled.

    L-BFGS-B does the work; a few Newton steps then polish its answer. Near-separable data (a
    run that wins nearly everything) leaves the objective so flat along some directions that
    L-BFGS-B stops on its relative-reduction test with the gradient still well above zero, and
    win rates would then depend on where it happened to stop. The Hessian has only
    1 + 2 * n_runs rows, so exact Newton steps are cheap and bring the gradient down to
    rounding level, which is also what makes a baseline-like run come out at 50 to 1e-6.

    With `start` (a bootstrap refit, started from the full data's optimum) Newton's steps go
    first: from that close they converge in a few steps, several times faster than L-BFGS-B;
    only if they do not does the fit fall back to L-BFGS-B from `start`.
    """
    n_rows = y.size
    has_difficulty = difficulty is not None
    n_params = 1 + n_runs * (2 if has_difficulty else 1)
    slope = slice(1 + n_runs, None)
    # L2_PENALTY applies to the summed log-loss; the objective is divided by n_rows throughout
    # so that its scale (and L-BFGS-B's tolerances) do not grow with the number of rows.
    penalty = L2_PENALTY / n_rows

    def logits(w: np.ndarray) -> np.ndarray:
        z = w[0] * length_feature + w[1 : 1 + n_runs][run_index]
        if has_difficulty:
            z = z + w[slope][run_index] * difficulty
        return z

    def per_run(weights: np.ndarray) -> np.ndarray:
        return np.bincount(run_index, weights=weights, minlength=n_runs)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = logits(w)
        # -[y log p + (1 - y) log(1 - p)] with p = sigmoid(z), written to be stable for any z.
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z)) + penalty * float(w @ w)
        residual = (_sigmoid(z) - y) / n_rows
        grad = np.empty(n_params)
        grad[0] = residual @ length_feature
        grad[1 : 1 + n_runs] = per_run(residual)
        if has_difficulty:
            grad[slope] = per_run(residual * difficulty)
        grad += 2 * penalty * w
        return loss, grad

    def hessian(w: np.ndarray) -> np.ndarray:
        p = _sigmoid(logits(w))
        s = p * (1 - p) / n_rows
        quality = np.arange(1, 1 + n_runs)
        h = np.zeros((n_params, n_params))
        h[0, 0] = s @ length_feature**2
        h[0, quality] = h[quality, 0] = per_run(s * length_feature)
        h[quality, quality] = per_run(s)
        if has_difficulty:
            slopes = quality + n_runs
            h[0, slopes] = h[slopes, 0] = per_run(s * length_feature * difficulty)
            h[quality, slopes] = h[slopes, quality] = per_run(s * difficulty)
            h[slopes, slopes] = per_run(s * difficulty**2)
        return h + 2 * penalty * np.eye(n_params)

    def newton(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grad = objective(w)[1]
        for _ in range(50):
            if float(np.max(np.abs(grad))) <= 1e-12:
                break
            step = np.linalg.solve(hessian(w), grad)
            # Backtrack on the gradient norm, not on the loss: near a (near-)separated optimum
            # the loss changes by less than its rounding error, while the gradient still
            # resolves. The Newton direction always decreases |grad|^2 (its slope is
            # -2 |grad|^2), and the objective is strictly convex, so driving the gradient to 0
            # finds the minimum.
            for t in 0.5 ** np.arange(30):
                candidate = w - t * step
                new_grad = objective(candidate)[1]
                if new_grad @ new_grad < grad @ grad:
                    break
            else:
                break
            w, grad = candidate, new_grad
        return w, grad

    def converged(w: np.ndarray, grad: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(w))) and float(np.max(np.abs(grad))) <= 1e-9

    if start is not None:
        w, grad = newton(np.asarray(start, dtype=float))
        if converged(w, grad):
            return w
    result = minimize(
        objective,
        np.zeros(n_params) if start is None else start,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12},
    )
    w, grad = newton(result.x)
    if not converged(w, grad):
        raise RuntimeError(f"length-controlled GLM did not converge: {result.message}")
    return w
