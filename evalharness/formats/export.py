"""A stored run as the files other projects' own tools read (`evalharness export`).

- `fastchat` (an mt_bench run): `DIR/model_answer/MODEL.jsonl` as FastChat's gen_model_answer
  writes it, and, for a single-mode judged run, `DIR/model_judgment/JUDGE_single.jsonl` as
  gen_judgment writes it (a verdict that did not parse is score -1), so FastChat's
  `show_result.py` and the harness's `import mt-bench` read them back.
- `alpaca-eval` (an alpaca_eval run): `DIR/model_outputs.json` (instruction, output,
  generator, dataset) and, when judged, `DIR/annotations.json` (output_1 = the reference,
  output_2 = the model, preference in [1, 2]).

Only verdicts a judge gave are written: an item missing from an imported file is not
re-exported as a failed rating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.fastchat import (
    answer_row,
    file_label,
    imported_answer_records,
    prompt_name,
    write_jsonl,
)

#: Export format → the task whose run it writes.
FORMATS = {"fastchat": "mt_bench", "alpaca-eval": "alpaca_eval"}
#: Verdict reasons that mean "nobody rated this": never written as a rating.
NOT_RATED = ("not_in_judgments_file", "not_in_annotations_file")


def read_stored(store: Any, run_id: str, export_format: str) -> dict[str, Any]:
    """The run, and its samples, responses and verdicts of the task `export_format` writes."""
    run = store.get_run(run_id)
    task = FORMATS[export_format]
    if not any(t["task"] == task for t in store.get_tasks(run_id)):
        raise InputError(f"run {run_id} has no {task} task: --format {export_format} needs one")
    return {
        "run": run,
        "info": next(t["info"] for t in store.get_tasks(run_id) if t["task"] == task),
        "samples": store.get_samples(run_id, task),
        "responses": store.get_run_responses(run_id, task),
        "verdicts": store.get_run_verdicts(run_id, task),
    }


def write_export(
    stored: dict[str, Any], export_format: str, out: Path, name: str | None = None
) -> list[Path]:
    """Write `stored` (`read_stored`) as `export_format` files under `out`; the paths written.

    `name` is the model's name in the files (default: `model_label` of the run).
    """
    name = name or model_label(stored["run"])
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, expected a directory")
    write = export_fastchat if export_format == "fastchat" else export_alpaca_eval
    return write(stored, name, out)


def model_label(run: dict[str, Any]) -> str:
    """The model's name in exported files: a recorded-outputs run keeps the name its file gave
    (AlpacaEval's `generator`, FastChat's file stem); others are named after their spec."""
    identity = (run.get("provenance") or {}).get("model") or {}
    if identity.get("backend") in ("outputs", "fastchat_answers") and identity.get("name"):
        return file_label(str(identity["name"]))
    return file_label(run["model"])


def export_fastchat(stored: dict[str, Any], name: str, out: Path) -> list[Path]:
    """FastChat's answer file, and its single-judgment file when the run rated the answers.

    Answers imported from FastChat files keep the `answer_id`, `model_id` and `tstamp` they
    were imported with, so import then export gives those fields back unchanged; answers
    generated here get a content-derived `answer_id`, the model's name and the run's time.
    """
    tstamp = float(stored["run"]["updated_at"])
    imported = imported_answer_records(stored["run"].get("provenance") or {})
    answers, judgments = [], []
    judge_label = file_label(stored["run"]["judge"] or "judge")
    single = stored["info"].get("options", {}).get("mode", "single") == "single"
    for sample in stored["samples"]:
        data, sid = sample["data"], sample["sample_id"]
        slots = stored["responses"].get(sid, {})
        if "turn1" not in slots or "turn2" not in slots:
            continue  # an interrupted run: only whole answers are written
        turns = [slots["turn1"]["text"], slots["turn2"]["text"]]
        row = answer_row(data["question_id"], name, turns, tstamp)
        row.update(imported.get(int(data["question_id"]), {}))
        answers.append(row)
        guided = bool(data.get("reference"))
        for turn in (1, 2):
            verdict = stored["verdicts"].get((sid, f"turn{turn}"))
            if not single or verdict is None or verdict.get("reason") in NOT_RATED:
                continue
            failed = bool(verdict.get("failure"))
            prompt = prompt_name(data["category"], turn, guided)
            judge = verdict.get("judge") or [judge_label, prompt]
            judgments.append(
                {
                    "question_id": data["question_id"],
                    "model": name,
                    "judge": judge,
                    "user_prompt": "",
                    "judgment": verdict.get("raw") or "",
                    "score": -1 if failed else verdict["rating"],
                    "turn": turn,
                    "tstamp": tstamp,
                }
            )
    if not answers:
        raise InputError(f"run {stored['run']['run_id']} has no complete MT-Bench answers")
    written = [write_jsonl(out / "model_answer" / f"{name}.jsonl", answers)]
    if judgments:
        label = file_label(judgments[0]["judge"][0])
        written.append(write_jsonl(out / "model_judgment" / f"{label}_single.jsonl", judgments))
    return written


def export_alpaca_eval(stored: dict[str, Any], name: str, out: Path) -> list[Path]:
    """AlpacaEval's model_outputs.json, and annotations.json when the run was judged against
    the task's references (a run judged against a baseline run's answers has no output_1 here)."""
    annotator = stored["run"]["judge"] or "unknown_annotator"
    annotator = annotator.removeprefix("annotations:")
    against_references = not stored["info"].get("options", {}).get("baseline")
    outputs, annotations = [], []
    for sample in stored["samples"]:
        data, sid = sample["data"], sample["sample_id"]
        response = stored["responses"].get(sid, {}).get("output")
        if response is None:
            continue
        outputs.append(
            {
                "instruction": data["instruction"],
                "output": response["text"],
                "generator": name,
                "dataset": data["dataset"],
            }
        )
        verdict = stored["verdicts"].get((sid, "verdict"))
        if verdict is None or verdict.get("reason") in NOT_RATED or not against_references:
            continue
        annotations.append(
            {
                "instruction": data["instruction"],
                "output_1": data["reference"],
                "generator_1": data.get("reference_generator", "reference"),
                "dataset": data["dataset"],
                "output_2": response["text"],
                "generator_2": name,
                "annotator": annotator,
                "preference": None if verdict.get("failure") else verdict.get("preference"),
            }
        )
    if not outputs:
        raise InputError(f"run {stored['run']['run_id']} has no AlpacaEval outputs")
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "model_outputs.json"]
    written[0].write_text(json.dumps(outputs, indent=2, ensure_ascii=False) + "\n")
    if annotations:
        written.append(out / "annotations.json")
        written[1].write_text(json.dumps(annotations, indent=2, ensure_ascii=False) + "\n")
    return written
