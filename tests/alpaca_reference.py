"""AlpacaEval's own length-controlled win rate, run offline on a synthetic calibration file.

`write_calibration` builds a `df_gamed.csv` in the schema of AlpacaEval's (`index`,
`instruction_difficulty`, `not_gamed_baseline`, `preference` in [0, 1], `std_delta_len`, `model`):
two gamed baselines, verbose and concise, judged by a length-biased judge, with a few rows that
have no preference. By default the first block lists the items in index order, as AlpacaEval's
file does, so AlpacaEval's row-label lookup of an item's difficulty finds the item's own row.

`alpaca_eval_lc` calls `alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate` (the
alpaca-eval package from the `dev` extra) without network: the module's `hf_hub_download` is
replaced, for the call only, by a function that checks it was asked for
`tatsu-lab/alpaca_eval`/`df_gamed.csv` (a dataset) and returns the synthetic file. alpaca-eval
0.6.6 imports `pkg_resources`, which setuptools >= 81 no longer ships; it only uses it to
compare version strings, so a stand-in with those two functions is installed when it is
missing. alpaca-eval turns sklearn's metadata routing on globally; the call runs inside
`sklearn.config_context()`, which puts the configuration back afterwards. Its sklearn
FutureWarnings (the `penalty` spelling) are silenced: they are about alpaca-eval's code.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

GAMED_MODELS = ("gpt4_1106_preview_verbose", "gpt4_1106_preview_concise")


def write_calibration(
    path: Path, n_items: int = 805, seed: int = 0, first_block_in_order: bool = True
) -> Path:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, n_items)
    blocks = []
    for model, direction in zip(GAMED_MODELS, (-1.0, 1.0), strict=True):
        order = np.arange(n_items)
        if model == GAMED_MODELS[0] and not first_block_in_order:
            order = rng.permutation(n_items)
        std_delta_len = rng.normal(1.2 * direction, 0.8, n_items)
        logit = -1.3 * np.tanh(std_delta_len) + 0.9 * difficulty + rng.normal(0, 0.4, n_items)
        preference = 1.0 / (1.0 + np.exp(-logit))
        preference[rng.choice(n_items, 3, replace=False)] = np.nan
        blocks.append(
            pd.DataFrame(
                {
                    "index": order,
                    "instruction_difficulty": difficulty[order],
                    "not_gamed_baseline": False,
                    "preference": preference[order],
                    "std_delta_len": std_delta_len[order],
                    "model": model,
                }
            )
        )
    pd.concat(blocks, ignore_index=True).to_csv(path, index=False)
    return path


def _glm_winrate_module() -> Any:
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse  # type: ignore[attr-defined]
        shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
            version=importlib.metadata.version(name)
        )
        sys.modules["pkg_resources"] = shim
    return pytest.importorskip("alpaca_eval.metrics.glm_winrate")


def alpaca_eval_lc(
    annotations: pd.DataFrame | Sequence[dict[str, Any]],
    calibration: Path,
    glm_name: str = "length_controlled_v1",
) -> dict[str, float]:
    """AlpacaEval's metrics for one model's annotations, with `calibration` as df_gamed.csv."""
    import sklearn

    glm_winrate = _glm_winrate_module()

    def hf_hub_download(**kwargs: Any) -> str:
        assert kwargs["repo_id"] == "tatsu-lab/alpaca_eval"
        assert kwargs["filename"] == "df_gamed.csv" and kwargs["repo_type"] == "dataset"
        return str(calibration)

    with (
        pytest.MonkeyPatch.context() as patch,
        sklearn.config_context(),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", FutureWarning)
        patch.setattr(glm_winrate, "hf_hub_download", hf_hub_download)
        metrics = glm_winrate.get_length_controlled_winrate(
            annotations, glm_name=glm_name, save_weights_dir=None
        )
    return {k: float(v) for k, v in metrics.items()}
