"""`evalharness import alpaca-eval`: AlpacaEval outputs (and annotations) become a run.

`model_outputs.json` is replayed as the model's answers; the verdicts come from AlpacaEval's
`annotations.json` (no judge call) or from a judge now. The metrics are then the harness's own
code over those verdicts, so an imported leaderboard entry is checked, not copied.
"""

from __future__ import annotations

from pathlib import Path

from evalharness.backends.spec import parse_model_spec
from evalharness.errors import InputError
from evalharness.formats.import_plan import ImportPlan
from evalharness.formats.records import input_file

TASK = "alpaca_eval"


def plan_alpaca_eval_import(
    outputs: str,
    *,
    annotations: str | None,
    judge: str | None,
    reference: str | None = None,
    calibration: str | None = None,
    difficulty: str | None = None,
    name: str | None = None,
    allow_mismatch: bool = False,
) -> ImportPlan:
    """The run `import alpaca-eval` makes; its files are checked before anything is stored."""
    from evalharness.tasks.alpaca_eval.calibration import is_path

    for option, value in (("outputs", outputs), ("annotations", annotations)):
        if value:  # errors name the flag used
            input_file(Path(value), f"--{option}")
    if calibration is not None and is_path(calibration):
        input_file(Path(calibration), "--calibration")
    options = {"data": reference or annotations or "hub"}
    for option, value in (("calibration", calibration), ("difficulty", difficulty)):
        if value:  # the task refuses `difficulty`, saying why
            options[option] = value
    model = parse_model_spec(f"outputs:{outputs}")
    if name:
        model = model.with_options(raw=f"outputs:{name}")
    judge = f"annotations:{annotations}" if annotations else judge
    warnings = []
    if judge and judge.startswith("annotations:"):
        mismatch = check_annotated_outputs(
            Path(judge.partition(":")[2]), Path(outputs), allow_mismatch
        )
        if mismatch:
            warnings.append(mismatch)
    return ImportPlan(model, TASK, options, judge, warnings=warnings)


def check_annotated_outputs(annotations: Path, outputs: Path, allow_mismatch: bool) -> str | None:
    """Refuse, before anything is stored, annotations that judged other outputs than these.

    A preference about another answer (an older generation, another model) would be counted
    as this model's. With `allow_mismatch` the import goes ahead, those rows are failures, and
    the warning to show is returned.
    """
    from evalharness.backends.outputs import read_outputs
    from evalharness.judges.annotations import mismatched, read_annotations

    rows, _ = read_annotations(annotations)
    differing = mismatched(rows, read_outputs(outputs)[0])
    if not differing:
        return None
    what = (
        f"{annotations}: {len(differing)} annotation(s) judged an output_2 other than "
        f"--outputs holds (first: {differing[0][:50]!r})"
    )
    if not allow_mismatch:
        raise InputError(f"{what}; fix the files, or pass --allow-mismatch to count them failed")
    return f"warning: {what}; counted as failures"
