"""Training configs over the tiny test model, written the same way by every training test.

Every training test names a method, the tiny model's directory, a data file and an output
directory; `train_config` fills those four fields and leaves the rest (steps, batch size,
learning rate, ...) to the test, so each one shows only the settings it is about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalharness.trainers.config import TrainConfig


def train_config(
    method: str, model: Path, data: Path | str, out: Path, **settings: Any
) -> TrainConfig:
    """`method` trained on `data` from the model directory `model` into `out`, plus `settings`."""
    return TrainConfig(method=method, model=f"hf:{model}", data=str(data), out=str(out), **settings)


def train_args(method: str, model: Path, data: Path | str, out: Path) -> list[str]:
    """The `evalharness train` command line for the same four fields (the test adds its flags)."""
    return [
        "train", "--method", method, "--model", f"hf:{model}", "--data", str(data),
        "--out", str(out),
    ]  # fmt: skip
