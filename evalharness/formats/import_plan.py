"""What importing another tool's files produces: the parts of a run, ready for `evaluate`.

An import reads outputs (and maybe verdicts) made elsewhere and turns them into a model spec,
one task with its options, and a judge: the same inputs `evalharness run` gives the engine, so
an imported run is stored, cached and reported like any other. Each format has its own reader
(`alpaca_eval_import`, `mt_bench_import`); this is the shape both return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evalharness.backends.spec import ModelSpec


@dataclass(frozen=True)
class ImportPlan:
    """A run to make from imported files.

    `runner_options` are prebuilt parts the engine's `Runner` uses instead of building its own
    (a backend that replays recorded answers, a judge that replays recorded ratings);
    `warnings` are lines to show the user before the run starts.
    """

    model: ModelSpec
    task: str
    options: dict[str, str]
    judge: str | None
    runner_options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
