"""Verdicts imported from AlpacaEval annotation files instead of asked of a judge.

AlpacaEval publishes, per model, the annotations its judge produced (`output_1` = baseline,
`output_2` = model, `preference` in [1, 2]). Reading them lets the harness recompute every metric
with its own code and no judge call. The judge's identity is the annotator's name, so all
models annotated by one annotator pool together (e.g. for the joint length-controlled fit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from evalharness.errors import InputError
from evalharness.records import read_records, require
from evalharness.requests import Request, Result
from evalharness.tasks.base import JudgeItem

from .base import Judge, side_of


def read_annotations(path: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """instruction -> annotation row, and the annotator's name."""
    rows: dict[str, dict[str, Any]] = {}
    annotators = set()
    for where, row in read_records(path, "--judge annotations"):
        instruction = require(where, row, "instruction", str)
        require(where, row, "output_1", str)
        require(where, row, "output_2", str)
        if "preference" not in row:
            raise InputError(f"{where}: missing field 'preference'")
        rows[instruction] = row
        annotators.add(str(row.get("annotator") or "unknown_annotator"))
    if not rows:
        raise InputError(f"{path}: no annotations")
    if len(annotators) > 1:
        raise InputError(f"{path}: annotations from several annotators {sorted(annotators)}")
    return rows, annotators.pop() if annotators else "unknown_annotator"


def as_preference(value: Any) -> float | None:
    """AlpacaEval's encoding: 0 is a draw (1.5); anything outside [1, 2] is not a preference."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number):
        return None
    if number == 0.0:
        return 1.5
    return number if 1.0 <= number <= 2.0 else None


class AnnotationsJudge(Judge):
    protocols: ClassVar[tuple[str, ...]] = ("pairwise",)

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self.rows, self.annotator = read_annotations(self.path)

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": f"annotations:{self.annotator}", "protocol": "imported_annotations"}

    def requests_for(self, item: JudgeItem, attempt: int = 0) -> list[Request]:
        self.check_protocol(item.protocol)
        return []

    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        row = self.rows.get(item.fields["question_1"])
        if row is None:
            return {"preference": None, "failure": True, "error": f"not in {self.path.name}"}
        preference = as_preference(row["preference"])
        if preference is None:
            return {
                "preference": None,
                "failure": True,
                "error": f"annotation preference {row['preference']!r} is not in [1, 2]",
            }
        return {
            "preference": preference,
            "winner": side_of(preference - 1.0),
            "consistent": None,
            "failure": False,
            # The annotated pair may differ from the run's (re-generated, whitespace).
            "same_outputs": row["output_2"] == item.fields["answer_1"]
            and row["output_1"] == item.fields["baseline_1"],
        }
