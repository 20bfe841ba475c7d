"""FastChat `llm_judge` files: model answers and single-answer judgments, read and written.

FastChat keeps MT-Bench answers in `model_answer/MODEL.jsonl` (one row per question:
`question_id`, `answer_id`, `model_id`, `choices[0].turns`, `tstamp`; the model's name is the
file's stem, which `load_model_answers` uses) and ratings in
`model_judgment/JUDGE_single.jsonl` (one row per model, question and turn: `model`, `judge`
= [judge model, prompt name], `score`, with -1 for a verdict that did not parse). Reading
them here, with errors naming file and line, lets the importer and exporter share one
definition of the format.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.engine.requests import canonical_json, sha256_hex
from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, read_jsonl

#: FastChat's rating when the judge's output held no `[[rating]]` (excluded by show_result).
INVALID_SCORE = -1
#: Categories FastChat grades with a reference answer (the `*-math-v1` prompts).
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


#: Fields of a FastChat answer row that say where it came from, not what it says: an imported
#: answer keeps them, so `export` writes them back as they were.
ANSWER_RECORD_FIELDS = ("answer_id", "model_id", "tstamp")
#: Where a run's provenance keeps them (`provenance["model_records"][RECORDS_KEY]`).
RECORDS_KEY = "fastchat_answers"


@dataclass(frozen=True)
class Answer:
    """One model's two turns for a question, the line they came from, and the row's own
    `ANSWER_RECORD_FIELDS` (those it has)."""

    question_id: int
    turns: list[str]
    where: str
    record: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Judgment:
    """One single-answer rating (`score` None when FastChat wrote -1) and its line."""

    question_id: int
    turn: int
    score: float | None
    judge: list[str]
    user_prompt: str
    judgment: str
    where: str


def question_id(where: str, row: dict[str, Any]) -> int:
    """FastChat writes integer ids; "81" is accepted, anything else names the line."""
    if "question_id" not in row:
        raise InputError(f"{where}: missing field 'question_id'")
    value = row["question_id"]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    raise InputError(f"{where}: field 'question_id' must be an integer, not {value!r}")


def model_name(path: Path) -> str:
    """FastChat's name for the model of an answer file: the file name without `.jsonl`."""
    name = path.name
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else path.stem


def read_answers(path: Path, option: str = "--answers") -> dict[int, Answer]:
    """question_id -> turns; a repeated id or a row without `choices[0].turns` names its line."""
    answers: dict[int, Answer] = {}
    ids = UniqueIds("question_id")
    for number, row in read_jsonl(path, option):
        where = f"{path}:{number}"
        key = question_id(where, row)
        ids.add(where, key)
        choices = row.get("choices")
        turns = None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            turns = choices[0].get("turns")
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            raise InputError(f"{where}: field 'choices' must hold turns (a list of strings)")
        record = {name: row[name] for name in ANSWER_RECORD_FIELDS if name in row}
        answers[key] = Answer(key, list(turns), where, record)
    if not answers:
        raise InputError(f"{path}: no answers")
    return answers


def read_single_judgments(path: Path, model: str) -> tuple[dict[tuple[int, int], Judgment], str]:
    """(question_id, turn) -> `model`'s rating, and the judge model's name.

    A judgment file holds every model FastChat judged; only `model`'s rows are kept. Pairwise
    rows (`model_1`/`model_2`) are refused: they rate no single answer.
    """
    found: dict[tuple[int, int], Judgment] = {}
    keys = UniqueIds()
    judges: set[str] = set()
    models: set[str] = set()
    for number, row in read_jsonl(path, "--judgments"):
        where = f"{path}:{number}"
        if "model" not in row and "model_1" in row:
            raise InputError(f"{where}: a pairwise judgment; give a *_single.jsonl file")
        for field in ("model", "judge", "score", "turn"):
            if field not in row:
                raise InputError(f"{where}: missing field {field!r}")
        models.add(str(row["model"]))
        if str(row["model"]) != model:
            continue
        judge = row["judge"]
        if not isinstance(judge, list) or not judge or not all(isinstance(j, str) for j in judge):
            raise InputError(f"{where}: field 'judge' must be [judge model, prompt name]")
        turn = row["turn"]
        if turn not in (1, 2) or isinstance(turn, bool):
            raise InputError(f"{where}: field 'turn' must be 1 or 2, not {turn!r}")
        score = row["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise InputError(f"{where}: field 'score' must be a number, not {score!r}")
        key = (question_id(where, row), turn)
        keys.add(where, key, described=f"a judgment of {model} on question {key[0]} turn {turn}")
        judges.add(judge[0])
        found[key] = Judgment(
            question_id=key[0],
            turn=turn,
            score=None if score == INVALID_SCORE else float(score),
            judge=list(judge),
            user_prompt=str(row.get("user_prompt") or ""),
            judgment=str(row.get("judgment") or ""),
            where=where,
        )
    if not found:
        held = ", ".join(sorted(models)[:5]) or "none"
        raise InputError(f"{path}: no judgments of model {model!r} (the file has: {held})")
    if len(judges) > 1:
        raise InputError(f"{path}: judgments from several judges {sorted(judges)}")
    return found, judges.pop()


def prompt_name(category: str, turn: int, guided: bool) -> str:
    """The FastChat single-grading prompt a (question, turn) is judged with."""
    name = "single-math-v1" if guided and category in REFERENCE_CATEGORIES else "single-v1"
    return f"{name}-multi-turn" if turn == 2 else name


def file_label(name: str) -> str:
    """A model or judge name as FastChat names files: the spec's prefix and any directories
    dropped (`hf:lmsys/vicuna-7b` -> `vicuna-7b`, `outputs:x` -> `x`, `fastchat:gpt-4` ->
    `gpt-4`), other characters a file name should not hold replaced by `_`."""
    kind, sep, rest = name.partition(":")
    if sep and re.fullmatch(r"[a-z_-]+", kind):
        name = rest
    name = name.rstrip("/").rpartition("/")[2]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")
    return label or "model"


def answer_row(qid: Any, model: str, turns: list[str], tstamp: float) -> dict[str, Any]:
    """A `model_answer` row as FastChat's gen_model_answer writes it (answer_id from content,
    so an export is reproducible, where FastChat draws a random shortuuid)."""
    answer_id = sha256_hex(canonical_json([qid, model, turns]))[:22]
    return {
        "question_id": qid,
        "answer_id": answer_id,
        "model_id": model,
        "choices": [{"index": 0, "turns": turns}],
        "tstamp": tstamp,
    }


def imported_answer_records(provenance: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """question_id -> the `ANSWER_RECORD_FIELDS` an imported answer file gave; empty for a run
    generated here (or imported before they were kept)."""
    rows = (provenance.get("model_records") or {}).get(RECORDS_KEY) or []
    return {
        int(row["question_id"]): {k: row[k] for k in ANSWER_RECORD_FIELDS if k in row}
        for row in rows
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path
