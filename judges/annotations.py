"""Verdicts imported from AlpacaEval annotation files instead of asked of a judge.

AlpacaEval publishes, per model, the annotations its judge produced (`output_1` = baseline,
`output_2` = model, `preference` in [1, 2]). Reading them lets the harness recompute every metric
with its own code and no judge call.

A verdict is only as good as the file it came from, so the judge's identity (verdict cache key,
run id) includes the file's sha256: a corrected file gives new verdicts and a new run id, and a
row missing from one version of the file is asked of the next one. A row is used only when its
instruction matches and its `output_2` is the output being judged (leading and trailing
whitespace ignored, since exporters strip it inconsistently); otherwise the verdict is a counted
failure, never a preference about some other answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from evalharness.engine.requests import Result
from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, read_records, require
from evalharness.tasks.base import JudgeItem

from .base import ImportedJudge, side_of

#: How rows are matched to judged items; part of the identity so a new rule means new verdicts.
MATCHING = "instruction, then output_2 == judged output (stripped)"
#: Failure reasons (`reason` in the verdict), counted per run as `failures_<reason>`.
NOT_IN_FILE = "not_in_annotations_file"
MISMATCH = "annotation_mismatch"


def read_annotations(path: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """instruction -> annotation row, and the annotator's name."""
    rows: dict[str, dict[str, Any]] = {}
    annotators = set()
    instructions = UniqueIds("instruction")
    for where, row in read_records(path, "--judge annotations"):
        instruction = require(where, row, "instruction", str)
        instructions.add(where, instruction, described=f"instruction {instruction[:60]!r}")
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


def same_output(annotated: str, judged: str) -> bool:
    """Whitespace at either end is formatting, not content; anything else is another answer."""
    return annotated.strip() == judged.strip()


def mismatched(rows: Mapping[str, Mapping[str, Any]], outputs: Mapping[str, str]) -> list[str]:
    """Instructions whose annotated `output_2` is not the output `outputs` gives for them."""
    return [
        instruction
        for instruction, row in rows.items()
        if instruction in outputs and not same_output(row["output_2"], outputs[instruction])
    ]


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


def failure(reason: str, error: str) -> dict[str, Any]:
    """A verdict that gives no preference, with a countable reason and a readable error."""
    return {"preference": None, "failure": True, "reason": reason, "error": error}


class AnnotationsJudge(ImportedJudge):
    protocols: ClassVar[tuple[str, ...]] = ("pairwise",)
    kind: ClassVar[str] = "imported_annotations"
    matching: ClassVar[str] = MATCHING

    def __init__(self, path: Path) -> None:
        path = path.expanduser()
        self.rows, self.annotator = read_annotations(path)  # a bad file says so before hashing
        super().__init__(path, f"annotations:{self.annotator}")

    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        row = self.rows.get(item.fields["question_1"])
        if row is None:
            return failure(NOT_IN_FILE, f"not in annotations file {self.path.name}")
        if not same_output(row["output_2"], item.fields["answer_1"]):
            return failure(MISMATCH, f"output_2 in {self.path.name} is not the judged output")
        preference = as_preference(row["preference"])
        if preference is None:
            error = f"annotation preference {row['preference']!r} is not in [1, 2]"
            return failure("invalid_preference", error)
        return {
            "preference": preference,
            "winner": side_of(preference - 1.0),
            "consistent": None,
            "failure": False,
            # A reference other than the annotated output_1 (`--reference`) is recorded, not
            # refused: the preference is still about this output_2 against that output_1.
            "same_reference": same_output(row["output_1"], item.fields["baseline_1"]),
        }
