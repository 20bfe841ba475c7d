"""Time of AlpacaEval's length-controlled win rate for one model: the fit and its bootstrap CI.

Run from the repository root::

    python benchmarks/length_control.py [--items 805] [--repeats 3]

What is timed
    `evalharness.tasks.alpaca_eval.length_control` on a synthetic model of `--items`
    instructions judged by a length-biased judge, with a synthetic calibration file of
    AlpacaEval's size (2 x 805 gamed-baseline rows, `tests/alpaca_reference.write_calibration`):
    the `length_controlled_v1` fit (`LogisticRegressionCV`, 10 C values x 5 folds, then the
    refit), its 200-resample bootstrap CI (one refit at the chosen C per resample), and the
    same two for the `length_controlled_minimal` fallback. The best of `--repeats` is shown.

Output
    A table on stdout and JSON at `--out` (default `benchmarks/results/length_control.json`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from measure import machine_info, timed_repeats  # beside this script
from reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic calibration writer the tests use

from alpaca_reference import write_calibration  # noqa: E402

from evalharness.tasks.alpaca_eval.calibration import read_calibration  # noqa: E402
from evalharness.tasks.alpaca_eval.length_control import (  # noqa: E402
    LC_RESAMPLES,
    ModelRows,
    bootstrap_ci,
    length_controlled,
)


def synthetic_model(n_items: int, seed: int = 0) -> ModelRows:
    rng = np.random.default_rng(seed)
    baseline = rng.lognormal(np.log(1500), 0.5, n_items).round().astype(int)
    lengths = (baseline * rng.lognormal(0.2, 0.4, n_items)).round().astype(int) + 1
    logit = 0.3 - 1.3 * np.tanh((baseline - lengths) / 600) + rng.normal(0, 0.8, n_items)
    return ModelRows(
        preferences=list(1 + 1 / (1 + np.exp(-logit))),
        model_lengths=[int(k) for k in lengths],
        baseline_lengths=[int(k) for k in baseline],
        indexes=list(range(n_items)),
    )


def best_of(repeats: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of `repeats` runs of `work` (the least disturbed one) and its result."""
    times, result = timed_repeats(work, repeats)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=805)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/length_control.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        calibration = read_calibration(write_calibration(Path(tmp) / "df_gamed.csv"))
    rows = synthetic_model(args.items)
    results: dict[str, Any] = {"items": args.items, "resamples": LC_RESAMPLES}
    print(f"{args.items} instructions, {calibration.preference.size} calibration rows")
    print(f"{'GLM':<28}{'fit s':>8}{'bootstrap s':>14}{'LC':>8}{'CI':>18}")
    for glm, used in (("length_controlled_v1", calibration), ("length_controlled_minimal", None)):
        fit_seconds, fit = best_of(args.repeats, lambda used=used: length_controlled(rows, used))
        ci_seconds, ci = best_of(
            args.repeats, lambda used=used, fit=fit: bootstrap_ci(rows, used, fit)
        )
        results[glm] = {
            "fit_seconds": fit_seconds,
            "bootstrap_seconds": ci_seconds,
            "win_rate": fit.win_rate,
            "ci": ci,
        }
        interval = f"{ci[0]:.1f}-{ci[1]:.1f}"
        print(f"{glm:<28}{fit_seconds:>8.2f}{ci_seconds:>14.2f}{fit.win_rate:>8.1f}{interval:>18}")
    results["machine"] = machine_info()
    write_json(Path(args.out), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
