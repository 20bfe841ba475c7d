"""FastChat MT-Bench files both ways: `import mt-bench` reproduces show_result's numbers, and
`export --format fastchat|alpaca-eval` writes files those projects' own loaders read."""

from __future__ import annotations

import json
import os
from glob import glob
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cli_helpers import run_cli, run_json, tiny_run_args
from test_alpaca_eval import make_model, reference_rows

from evalharness.store.run_store import RunStore

QUESTION_IDS = list(range(1, 9))  # the authored set `--questions builtin` reads
MODEL = "model_a"
# One rating per (question, turn); -1 is FastChat's "no [[rating]] parsed".
SCORES = {
    1: (8, 7),
    2: (6, -1),
    3: (3, 2),
    4: (10, 9),
    5: (7.5, 5),
    6: (9, 4),
    7: (5, 6),
    8: (2, 1),
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def answer_rows(model: str = MODEL) -> list[dict[str, Any]]:
    return [
        {
            "question_id": qid,
            "answer_id": f"a{qid}",
            "model_id": model,
            "choices": [
                {"index": 0, "turns": [f"{model} answer {qid}.1", f"{model} answer {qid}.2"]}
            ],
            "tstamp": 1700000000.0,
        }
        for qid in QUESTION_IDS
    ]


def judgment_rows(model: str, scores: dict[int, tuple[float, float]]) -> list[dict[str, Any]]:
    rows = []
    for qid, pair in scores.items():
        for turn, score in zip((1, 2), pair, strict=True):
            answers = f"{model} answer {qid}.1" + (
                f" ... {model} answer {qid}.2" if turn == 2 else ""
            )
            rows.append(
                {
                    "question_id": qid,
                    "model": model,
                    "judge": ["gpt-4", "single-v1" if turn == 1 else "single-v1-multi-turn"],
                    "user_prompt": f"[Question]\n...\n[The Start of Assistant's Answer]\n{answers}",
                    "judgment": f"Rating: [[{score}]]",
                    "score": score,
                    "turn": turn,
                    "tstamp": 1700000001.0,
                }
            )
    return rows


def show_result_single(path: Path, model: str) -> dict[str, float]:
    """FastChat's show_result.py `display_result_single`, transcribed (pandas as upstream)."""
    df_all = pd.read_json(path, lines=True)
    df = df_all[["model", "score", "turn"]]
    df = df[df["score"] != -1]
    df_1 = df[df["turn"] == 1].groupby(["model", "turn"]).mean()
    df_2 = df[df["turn"] == 2].groupby(["model", "turn"]).mean()
    df_3 = df[["model", "score"]].groupby(["model"]).mean()
    return {
        "score_turn1": float(df_1.loc[(model, 1), "score"]),
        "score_turn2": float(df_2.loc[(model, 2), "score"]),
        "score": float(df_3.loc[model, "score"]),
    }


def load_model_answers(answer_dir: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """FastChat's common.load_model_answers, transcribed: the model is the file's stem."""
    model_answers = {}
    for filename in sorted(glob(os.path.join(answer_dir, "*.jsonl"))):
        model_name = os.path.basename(filename)[:-6]
        answer = {}
        with open(filename) as fin:
            for line in fin:
                row = json.loads(line)
                answer[row["question_id"]] = row
        model_answers[model_name] = answer
    return model_answers


@pytest.fixture
def fastchat_files(tmp_path: Path) -> tuple[Path, Path]:
    """model_answer/model_a.jsonl and a judgment file that also rates another model."""
    answers = write_jsonl(tmp_path / "model_answer" / f"{MODEL}.jsonl", answer_rows())
    other = {qid: (1, 1) for qid in QUESTION_IDS}
    rows = judgment_rows("model_b", other) + judgment_rows(MODEL, SCORES)
    judgments = write_jsonl(tmp_path / "model_judgment" / "gpt-4_single.jsonl", rows)
    return answers, judgments


def import_mt_bench(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    return run_json(capsys, "import", "mt-bench", "--questions", "builtin", *args)


def metrics_of(capsys: pytest.CaptureFixture[str], run_id: str) -> dict[str, Any]:
    return run_json(capsys, "show", run_id)["tasks"]["mt_bench"]


def test_import_reproduces_show_result_exactly(
    fastchat_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    answers, judgments = fastchat_files
    result = import_mt_bench(capsys, "--answers", str(answers), "--judgments", str(judgments))
    assert result["calls_made"] == {"model": 0, "judge": 0}
    entry = metrics_of(capsys, result["run_id"])
    expected = show_result_single(judgments, MODEL)
    for key, value in expected.items():
        assert entry["metrics"][key] == value, key  # exactly, not approximately
    assert entry["failures"] == 1  # the -1 rating: excluded from every mean, counted
    assert entry["counts"]["ratings"] == 15
    shown = run_json(capsys, "show", result["run_id"])
    assert shown["model"] == f"outputs:{MODEL}" and shown["judge"] == "fastchat:gpt-4"
    again = import_mt_bench(capsys, "--answers", str(answers), "--judgments", str(judgments))
    assert again["run_id"] == result["run_id"]


def test_export_fastchat_round_trip(
    fastchat_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers, judgments = fastchat_files
    first = import_mt_bench(capsys, "--answers", str(answers), "--judgments", str(judgments))
    out = tmp_path / "exported"
    written = run_json(capsys, "export", first["run_id"], "--format", "fastchat", "--out", str(out))
    answer_file = out / "model_answer" / f"{MODEL}.jsonl"
    judgment_file = out / "model_judgment" / "gpt-4_single.jsonl"
    assert written["written"] == [str(answer_file), str(judgment_file)]
    loaded = load_model_answers(out / "model_answer")
    assert list(loaded) == [MODEL] and sorted(loaded[MODEL]) == QUESTION_IDS
    originals = {row["question_id"]: row for row in answer_rows()}
    for qid, row in loaded[MODEL].items():
        assert row["choices"][0]["turns"] == originals[qid]["choices"][0]["turns"]
    assert show_result_single(judgment_file, MODEL) == show_result_single(judgments, MODEL)
    second = import_mt_bench(
        capsys, "--answers", str(answer_file), "--judgments", str(judgment_file)
    )
    assert (
        metrics_of(capsys, second["run_id"])["metrics"]
        == metrics_of(capsys, first["run_id"])["metrics"]
    )


def test_export_gives_back_the_imported_answer_ids_model_ids_and_timestamps(
    fastchat_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Import then export: `answer_id`, `model_id` and `tstamp` of every answer row are the
    imported file's, byte for byte (they were regenerated: a content hash, the file's name,
    the run's time). Here the file was renamed, so its `model_id` is not its name."""
    originals = [
        {
            **row,
            "answer_id": f"Xq8vT3nLbWmZ{qid:02d}kPd4RcYh",  # FastChat's shortuuid: 22 characters
            "model_id": "vicuna-13b-v1.3",
            "tstamp": 1687222790.5712383 + qid / 7,
        }
        for qid, row in zip(QUESTION_IDS, answer_rows(), strict=True)
    ]
    answers = write_jsonl(tmp_path / "renamed" / f"{MODEL}.jsonl", originals)
    _, judgments = fastchat_files
    imported = import_mt_bench(capsys, "--answers", str(answers), "--judgments", str(judgments))
    out = tmp_path / "exported"
    run_json(capsys, "export", imported["run_id"], "--format", "fastchat", "--out", str(out))
    lines = (out / "model_answer" / f"{MODEL}.jsonl").read_text().splitlines()
    assert len(lines) == len(originals)
    for original, line in zip(originals, lines, strict=True):
        assert json.loads(line)["question_id"] == original["question_id"]
        for field in ("answer_id", "model_id", "tstamp"):
            assert f'"{field}": {json.dumps(original[field])}' in line, (field, line)


def test_export_of_a_generated_run_names_and_dates_its_answers(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No file to give them back from: the model's name, the run's time, distinct answer ids."""
    judge = f"hf:{tiny_model_dir}"
    args = tiny_run_args(tiny_model_dir, None, "--limit", "2", "--judge", judge, max_new_tokens=4)
    run = run_json(capsys, *args)
    out = tmp_path / "exported"
    run_json(capsys, "export", run["run_id"], "--format", "fastchat", "--out", str(out))
    (answer_file,) = (out / "model_answer").glob("*.jsonl")
    rows = [json.loads(line) for line in answer_file.read_text().splitlines()]
    assert len(rows) == 2
    assert {row["model_id"] for row in rows} == {answer_file.stem} == {tiny_model_dir.name}
    assert len({row["answer_id"] for row in rows}) == 2
    store = RunStore(Path(os.environ["EVALHARNESS_STORE"]))
    try:
        stored_at = store.get_run(run["run_id"])["updated_at"]
    finally:
        store.close()
    assert {row["tstamp"] for row in rows} == {stored_at}


def test_judge_now_then_export_and_reimport(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = write_jsonl(tmp_path / f"{MODEL}.jsonl", answer_rows())
    judged = import_mt_bench(capsys, "--answers", str(answers), "--judge", f"hf:{tiny_model_dir}")
    assert judged["calls_made"]["model"] == 0 and judged["calls_made"]["judge"] > 0
    out = tmp_path / "exported"
    run_json(capsys, "export", judged["run_id"], "--format", "fastchat", "--out", str(out))
    (judgment_file,) = (out / "model_judgment").glob("*_single.jsonl")
    assert judgment_file.name == f"{tiny_model_dir.name}_single.jsonl"
    rows = [json.loads(line) for line in judgment_file.read_text().splitlines()]
    assert {row["judge"][1] for row in rows if row["question_id"] == 4} == {
        "single-math-v1",
        "single-math-v1-multi-turn",
    }
    reimported = import_mt_bench(
        capsys, "--answers", str(out / "model_answer" / f"{MODEL}.jsonl"),
        "--judgments", str(judgment_file),
    )  # fmt: skip
    before = metrics_of(capsys, judged["run_id"])["metrics"]
    after = metrics_of(capsys, reimported["run_id"])["metrics"]
    for key in ("score", "score_turn1", "score_turn2"):
        assert after[key] == pytest.approx(before[key], abs=1e-12), key
    assert show_result_single(judgment_file, MODEL)["score"] == pytest.approx(before["score"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[2].update(question_id=999), "model_a.jsonl:3: question_id 999 is not"),
        (
            lambda rows: rows[4]["choices"][0].update(turns=["only one"]),
            "model_a.jsonl:5: choices[0].turns has 1 turn(s)",
        ),
        (lambda rows: rows.pop(), "no answer for question_id 8 (1 of 8 questions unanswered)"),
        (lambda rows: rows[1].pop("choices"), "model_a.jsonl:2: field 'choices' must hold turns"),
    ],
)
def test_bad_answer_files_are_one_line_errors(
    edit: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = answer_rows()
    edit(rows)
    answers = write_jsonl(tmp_path / f"{MODEL}.jsonl", rows)
    judgments = write_jsonl(tmp_path / "j.jsonl", judgment_rows(MODEL, SCORES))
    code, _, err = run_cli(
        capsys, "import", "mt-bench", "--questions", "builtin", "--answers", str(answers),
        "--judgments", str(judgments),
    )  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_bad_judgment_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = write_jsonl(tmp_path / f"{MODEL}.jsonl", answer_rows())
    cases = {
        "other model only": (judgment_rows("model_b", SCORES), "no judgments of model 'model_a'"),
        "pairwise": (
            [{"question_id": 1, "model_1": MODEL, "model_2": "b"}],
            "j.jsonl:1: a pairwise",
        ),
        "bad turn": ([dict(judgment_rows(MODEL, SCORES)[0], turn=3)], "j.jsonl:1: field 'turn'"),
        "unknown question": (
            [dict(judgment_rows(MODEL, SCORES)[0], question_id=500)],
            "j.jsonl:1: question_id 500 is not a question",
        ),
    }
    for name, (rows, message) in cases.items():
        judgments = write_jsonl(tmp_path / "j.jsonl", rows)
        code, _, err = run_cli(
            capsys, "import", "mt-bench", "--questions", "builtin", "--answers", str(answers),
            "--judgments", str(judgments),
        )  # fmt: skip
        assert code == 2 and message in err, (name, err)


def test_missing_and_mismatched_judgments_are_counted_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A (question, turn) without a row, or whose user_prompt judged another answer, gives no
    rating: like -1, it is out of the means and counted."""
    answers = write_jsonl(tmp_path / f"{MODEL}.jsonl", answer_rows())
    rows = judgment_rows(MODEL, SCORES)
    rows.pop(0)  # question 1, turn 1
    rows[0]["user_prompt"] = "[The Start of Assistant's Answer]\nsomeone else's answer"
    judgments = write_jsonl(tmp_path / "j.jsonl", rows)
    result = import_mt_bench(capsys, "--answers", str(answers), "--judgments", str(judgments))
    entry = metrics_of(capsys, result["run_id"])
    assert entry["failures"] == 3 and entry["counts"]["ratings"] == 13
    valid = [s for qid, pair in SCORES.items() if qid != 1 for s in pair if s != -1]
    assert entry["metrics"]["score"] == sum(valid) / len(valid)


def test_export_alpaca_eval_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    references = reference_rows()
    outputs = [r["output"] + " More." for r in references]
    preferences = [1.9, 1.1, 0, 1.5, None, 2.0, 1.0, 1.73, 1.2, 1.6, 1.5, 1.05]
    model_outputs, annotations = make_model(tmp_path, "model_x", references, outputs, preferences)
    first = run_json(
        capsys, "import", "alpaca-eval", "--outputs", str(model_outputs),
        "--annotations", str(annotations),
    )  # fmt: skip
    out = tmp_path / "exported"
    run_json(capsys, "export", first["run_id"], "--format", "alpaca-eval", "--out", str(out))
    exported = json.loads((out / "model_outputs.json").read_text())
    originals = json.loads(model_outputs.read_text())
    # The dataset column is not in annotations (the run's data): what the task held is written.
    assert [{**row, "dataset": "unknown"} for row in originals] == exported
    second = run_json(
        capsys, "import", "alpaca-eval", "--outputs", str(out / "model_outputs.json"),
        "--annotations", str(out / "annotations.json"),
    )  # fmt: skip
    before = first["tasks"]["alpaca_eval"]
    after = second["tasks"]["alpaca_eval"]
    assert after["failures"] == before["failures"] == 1
    for key in ("win_rate", "standard_error", "n_total", "n_wins", "n_draws"):
        assert after["metrics"][key] == before["metrics"][key], key


def test_export_refuses_a_run_without_the_format_task(
    fastchat_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers, judgments = fastchat_files
    run = import_mt_bench(capsys, "--answers", str(answers), "--judgments", str(judgments))
    code, _, err = run_cli(
        capsys, "export", run["run_id"], "--format", "alpaca-eval", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "has no alpaca_eval task" in err


def test_import_with_fastchat_questions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """FastChat's own question.jsonl (ids 81-160) from shared data: all 80 answered and rated."""
    from conftest import shared_data

    questions = shared_data("mt_bench")
    ids = [json.loads(line)["question_id"] for line in (questions / "question.jsonl").open()]
    rows = [
        {"question_id": qid, "choices": [{"turns": [f"{MODEL} answer {qid}.{t}" for t in (1, 2)]}]}
        for qid in ids
    ]
    answers = write_jsonl(tmp_path / "model_answer" / f"{MODEL}.jsonl", rows)
    scores = {qid: (qid % 10 + 1, -1 if qid % 7 == 0 else qid % 3 + 4) for qid in ids}
    judgments = write_jsonl(tmp_path / "gpt-4_single.jsonl", judgment_rows(MODEL, scores))
    result = run_json(
        capsys, "import", "mt-bench", "--questions", str(questions), "--answers", str(answers),
        "--judgments", str(judgments),
    )  # fmt: skip
    entry = result["tasks"]["mt_bench"]
    assert entry["n"] == 80 and entry["failures"] == sum(qid % 7 == 0 for qid in ids)
    expected = show_result_single(judgments, MODEL)
    assert {k: entry["metrics"][k] for k in expected} == expected
