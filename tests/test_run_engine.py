"""End-to-end runs of the engine on a tiny local model: output shape, caching, resume, errors."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import MINI, run_cli, run_json, spawn_cli, tiny_run_args, write_lines

from evalharness.store.run_store import RunStore
from evalharness.testing.judge_server import (
    ScriptedJudgeConfig,
    create_judge_app,
    running_judge_server,
)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    """Poll a state (never a sleep-and-hope) until it holds; the timeout only guards a hang."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def test_run_prints_the_documented_json_and_rerun_makes_no_calls(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    first = run_json(capsys, *tiny_run_args(tiny_model_dir, store, "--limit", "3"))
    assert set(first) >= {"run_id", "model", "tasks", "calls_made"}
    entry = first["tasks"]["mt_bench"]
    assert entry["n"] == 3
    assert entry["failures"] == 0  # probability-read ratings cannot fail to parse
    metrics = entry["metrics"]
    for key in ("score", "score_turn1", "score_turn2", "writing", "roleplay", "reasoning"):
        assert 1.0 <= metrics[key] <= 10.0, key
    # --limit takes categories round-robin: three samples cover three categories.
    assert first["calls_made"]["model"] == 6  # 3 questions x 2 turns
    assert first["calls_made"]["judge"] == 60  # 6 verdicts x 10 rating probabilities
    # No --judge: MT-Bench is judged by the model itself, and --json says so too.
    (warning,) = first["warnings"]
    assert warning.startswith("mt_bench judged by the model itself: a demonstration")

    counts = RunStore(store).counts()
    second = run_json(capsys, *tiny_run_args(tiny_model_dir, store, "--limit", "3"))
    assert second["calls_made"] == {"model": 0, "judge": 0}
    assert second["run_id"] == first["run_id"]
    assert second["tasks"] == first["tasks"]
    assert RunStore(store).counts() == counts
    code, _, err = run_cli(capsys, *tiny_run_args(tiny_model_dir, store, "--limit", "3"))
    assert code == 0 and warning in err  # the human output shows it on stderr, one line

    shown = run_json(capsys, "show", first["run_id"][:6], "--store", str(store))
    assert shown["tasks"]["mt_bench"]["metrics"] == metrics
    assert shown["warnings"] == first["warnings"]
    assert shown["calls_made"] == {"model": 0, "judge": 0}
    assert shown["provenance"]["model"]["weights_sha256"]


def test_turn_two_sees_the_first_answer_and_the_judge_sees_the_reference(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    result = run_json(capsys, *tiny_run_args(tiny_model_dir, store, "--limit", "3"))
    db = sqlite3.connect(store)
    requests = [json.loads(r[0]) for r in db.execute("SELECT request_json FROM responses")]
    second_turns = [r for r in requests if len(r["messages"]) == 3]
    assert len(second_turns) == 3
    answers = {json.loads(r[0])["text"] for r in db.execute("SELECT result_json FROM responses")}
    assert all(r["messages"][1]["role"] == "assistant" for r in second_turns)
    assert all(r["messages"][1]["content"] in answers for r in second_turns)
    items = [json.loads(r[0]) for r in db.execute("SELECT input_json FROM verdicts")]
    reasoning = [i for i in items if i["fields"].get("reference")]
    assert len(reasoning) == 2  # the reasoning question, both turns, judged with its reference
    assert result["tasks"]["mt_bench"]["n"] == 3


UNGUIDED = "mt_bench: 1 math/reasoning/coding question graded without reference answers"


def test_questions_graded_without_references_are_warned_and_references_silence_it(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warning and the provenance record come from what the run stored, so `show` gives
    them again; a reference file covering the question silences it and makes another run."""
    questions = write_lines(
        tmp_path / "question.jsonl",
        [
            '{"question_id": 1, "category": "reasoning", "turns": ["Is 7 prime?", "And 9?"]}',
            '{"question_id": 2, "category": "writing", "turns": ["A haiku.", "Another."]}',
        ],
    )
    references = write_lines(
        tmp_path / "gpt-4.jsonl",
        ['{"question_id": 1, "choices": [{"turns": ["Yes: REF-ONE.", "No: REF-TWO."]}]}'],
    )
    store = tmp_path / "runs.sqlite"
    args = ["run", "--model", f"hf:{tiny_model_dir}", "--tasks", "mt_bench", "--no-progress"]
    args += ["--task-arg", f"mt_bench.data={questions}", "--store", str(store)]
    args += ["--task-arg", "mt_bench.max_new_tokens=8"]

    bare = run_json(capsys, *args)
    assert [w for w in bare["warnings"] if w.startswith("mt_bench: ")] == [
        UNGUIDED + " (FastChat grades them against references); pass mt_bench.reference=PATH"
        " (FastChat's reference_answer/gpt-4.jsonl)"
    ]
    shown = run_json(capsys, "show", bare["run_id"], "--store", str(store))
    assert shown["warnings"] == bare["warnings"]
    assert shown["provenance"]["tasks"]["mt_bench"]["settings"]["references"] == {
        "source": None,
        "needing_reference": 1,
        "questions_with_reference": 0,
    }

    guided = run_json(capsys, *args, "--task-arg", f"mt_bench.reference={references}")
    assert guided["run_id"] != bare["run_id"]  # other references, other data hash
    assert not [w for w in guided["warnings"] if w.startswith("mt_bench: ")]
    shown = run_json(capsys, "show", guided["run_id"], "--store", str(store))
    assert shown["warnings"] == guided["warnings"]
    assert shown["provenance"]["tasks"]["mt_bench"]["settings"]["references"] == {
        "source": str(references.resolve()),
        "needing_reference": 1,
        "questions_with_reference": 1,
    }
    items = sqlite3.connect(store).execute("SELECT input_json FROM verdicts")
    referenced = [json.loads(r[0])["fields"]["reference"] for r in items]
    assert referenced.count(["Yes: REF-ONE.", "No: REF-TWO."]) == 2  # both turns, guided


def test_text_judge_failures_are_recorded_not_dropped(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    args = tiny_run_args(tiny_model_dir, store, "--limit", "2", "--judge-mode", "text")
    result = run_json(capsys, *args)
    entry = result["tasks"]["mt_bench"]
    rows = sqlite3.connect(store).execute("SELECT verdict_json FROM verdicts")
    verdicts = [json.loads(r[0]) for r in rows]
    failed = [v for v in verdicts if v["failure"]]
    assert len(verdicts) == 4
    assert entry["failures"] == len(failed)
    assert all(v["rating"] == -1 and "raw" in v for v in failed)
    assert entry["counts"]["ratings"] == 4 - len(failed)


@pytest.mark.timing
def test_killed_run_resumes_with_exactly_the_expected_samples(tmp_path: Path) -> None:
    """SIGKILL mid-run at a known point: the model's server answers eight calls and holds the
    ninth, so the run is still going when it is killed, however slow the machine is."""
    store = tmp_path / "runs.sqlite"
    app = create_judge_app(ScriptedJudgeConfig(hold_after=8))
    server = app.state.judge
    with running_judge_server(app=app) as url:
        model = ["--model", "openai:scripted", "--base-url", url, "--concurrency", "1"]
        judge = ["--judge", "openai:scripted", "--judge-base-url", url, "--judge-mode", "text"]
        args = ["run", *model, *MINI, *judge, "--store", str(store), "--json"]
        process = spawn_cli(*args)
        wait_until(lambda: server.stats()["held"] == 1 or process.poll() is not None, "a held call")
        assert process.poll() is None, process.communicate()[1]
        process.kill()  # SIGKILL: no cleanup runs
        process.wait()
        before = sqlite3.connect(store).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        assert 0 < before < 16

        server.release()
        resumed = spawn_cli(*args)
        out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    result = json.loads(out)
    assert result["resumed"] is True
    assert result["calls_made"]["model"] == 16 - before
    assert result["tasks"]["mt_bench"]["n"] == 8
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 16
    assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 16
    assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 8
    assert db.execute("SELECT COUNT(*) FROM links").fetchone()[0] == 32
    assert db.execute("SELECT status FROM runs").fetchall() == [("complete",)]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--tasks", "no_such_task"], "unknown task 'no_such_task'"),
        (["run", "--model", "gpt-4"], "unknown model spec 'gpt-4'"),
        (["run", "--task-arg", "mt_bench.colour=red"], "unknown mt_bench option 'colour'"),
        (["run", "--task-arg", "nonsense"], "expected TASK.KEY=VALUE"),
        # A read command never creates the store it is pointed at.
        (["show", "deadbeef"], "no run store at"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_malformed_question_files_name_the_file_and_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = '{"question_id": 1, "category": "math", "turns": ["a", "b"]}'
    no_category = '{"question_id": 2, "turns": ["a", "b"]}'
    one_turn = '{"question_id": 1, "category": "math", "turns": ["a"]}'
    cases = {
        "broken.jsonl": ([good, '{"question_id": 2, "category": '], ":2: invalid JSON"),
        "missing.jsonl": ([good, no_category], ":2: missing field 'category'"),
        "oneturn.jsonl": ([one_turn], ":1: field 'turns'"),
    }
    for name, (lines, needle) in cases.items():
        path = write_lines(tmp_path / name, lines)
        code, _, err = run_cli(
            capsys,
            "run",
            "--model",
            f"hf:{tiny_model_dir}",
            "--tasks",
            "mt_bench",
            "--task-arg",
            f"mt_bench.data={path}",
            "--store",
            str(tmp_path / "s.sqlite"),
        )
        assert code == 2, name
        assert f"{path}{needle}" in err, err
        assert len(err.strip().splitlines()) == 1


def test_unreachable_judge_endpoint_fails_cleanly_and_keeps_answers(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    args = tiny_run_args(tiny_model_dir, store, "--limit", "1", "--no-progress")
    args += ["--judge", "openai:judge", "--judge-base-url", "http://127.0.0.1:9/v1"]
    code, _, err = run_cli(capsys, *args)
    assert code == 3
    errors = [line for line in err.splitlines() if line.startswith("evalharness: error")]
    assert len(errors) == 1 and "unreachable" in errors[0]
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 2  # answers kept
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"


@pytest.mark.timing
def test_ctrl_c_stops_cleanly_and_the_same_command_finishes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Interrupt a run at a known point, however loaded the machine: the judge server answers
    two verdict requests and holds the rest, so the run cannot finish before the signal."""
    store = tmp_path / "runs.sqlite"
    app = create_judge_app(ScriptedJudgeConfig(hold_after=2))
    judge = app.state.judge
    with running_judge_server(app=app) as url:
        judged = ["--judge", "openai:scripted", "--judge-base-url", url, "--judge-concurrency", "1"]
        args = tiny_run_args(tiny_model_dir, store, *judged, "--json")
        process = spawn_cli(*args)
        wait_until(lambda: judge.stats()["held"] == 1 or process.poll() is not None, "a held call")
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 130, err
        assert "run the same command to resume" in err
        db = sqlite3.connect(store)
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 16  # answers kept
        assert judge.stats()["requests"] == 2  # the held call never got in

        judge.release()
        finished = spawn_cli(*args)
        out, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err
    result = json.loads(out)
    assert result["tasks"]["mt_bench"]["n"] == 8
    assert result["calls_made"]["model"] == 0  # resumed: every answer came from the store
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "complete"
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 16


def test_hub_model_that_is_not_cached_offline_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    code, _, err = run_cli(capsys, "run", "--model", "hf:someone/not-cached-model", "--limit", "1")
    assert code == 2
    assert "hf:someone/not-cached-model" in err
    assert len(err.strip().splitlines()) == 1
