"""Options that bound a run, the judge-call estimate, and suggestions for misspelt names.

Bounds out of range (`--limit -1` silently dropped the last sample, `--limit 0` stored an empty
complete run, a negative `--max-judge-calls` was accepted) are one-line errors naming the option
as the user wrote it: on the command line, in a pipeline YAML, in `evalharness.evaluate`. The
judge-call estimate is checked against the calls a real judge makes over HTTP.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import pipeline_error, run_cli, run_json, tiny_run_args

from evalharness.errors import InputError
from evalharness.testing.judge_server import ScriptedJudgeConfig, running_judge_server


@pytest.mark.parametrize(
    ("option", "value", "expect"),
    [
        ("--limit", "-1", "--limit must be at least 1, not -1"),
        ("--limit", "0", "--limit must be at least 1, not 0"),
        ("--max-judge-calls", "-1", "--max-judge-calls must be at least 0, not -1"),
        ("--judge-retries", "-2", "--judge-retries must be at least 0, not -2"),
    ],
)
def test_out_of_range_bounds_are_one_line_errors_and_store_nothing(
    option: str,
    value: str,
    expect: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "store.sqlite"
    code, out, err = run_cli(capsys, *tiny_run_args(tiny_model_dir, store, option, value))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"evalharness: error: {expect}"), line
    assert not store.exists()


@pytest.mark.parametrize(
    ("arguments", "expect"),
    [
        ({"limit": -1}, "limit must be at least 1, not -1"),
        ({"limit": 0}, "limit must be at least 1, not 0"),
        ({"max_judge_calls": -1}, "max_judge_calls must be at least 0, not -1"),
        ({"limit": 2.5}, "limit must be a whole number, not 2.5"),
    ],
)
def test_the_python_api_checks_the_same_bounds(
    arguments: dict, expect: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from evalharness import evaluate

    store = tmp_path / "store.sqlite"
    with pytest.raises(InputError, match=f"^{expect}"):
        evaluate(f"hf:{tiny_model_dir}", "driftcaps", store=store, **arguments)
    assert not store.exists()


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("evaluate: {tasks: [driftcaps], limit: 0}", "field 'evaluate.limit' must be at least 1"),
        ("evaluate: {tasks: [driftcaps], limit: -1}", "field 'evaluate.limit' must be at least 1"),
        (
            "evaluate: {tasks: [driftcaps], max_judge_calls: -5}",
            "field 'evaluate.max_judge_calls' must be at least 0, not -5",
        ),
    ],
)
def test_a_pipeline_config_checks_the_bounds_before_training(
    line: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, message = pipeline_error(tmp_path, capsys, line)
    assert message.startswith(f"evalharness: error: {config}:2: {expect}"), message


def test_max_judge_calls_zero_stores_the_answers_and_judges_nothing(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.sqlite"
    args = tiny_run_args(tiny_model_dir, store, "--limit", "1", "--max-judge-calls", "0")
    result = run_json(capsys, *args)
    assert result["status"] == "partial"
    assert result["calls_made"] == {"model": 2, "judge": 0}
    assert result["judging"]["unjudged"]["over_budget"] == 2


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the estimate tests: the model's answers are generated once and reused
    (each judge server listens on its own port, so verdicts are never shared)."""
    return tmp_path_factory.mktemp("answers") / "store.sqlite"


def short_run(model: Path, store: Path, *extra: str) -> list[str]:
    return tiny_run_args(model, store, "--limit", "2", *extra, max_new_tokens=4)


def api_judge(url: str) -> list[str]:
    return ["--judge", "openai:scripted", "--judge-base-url", url, "--judge-mode", "text"]


@pytest.mark.parametrize(
    ("garbage_rate", "retries"),
    [(0.0, 2), (1.0, 2), (1.0, 0)],
    ids=["verdicts-parse", "never-parse", "never-parse-no-retries"],
)
def test_the_estimate_bounds_the_calls_a_real_judge_makes(
    garbage_rate: float,
    retries: int,
    tiny_model_dir: Path,
    answers: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A text judge asks again (sampled) when a verdict has no marker: the scripted server
    answers every new request body without one at `garbage_rate` 1, so every item costs its
    first call and every retry, the estimate's maximum exactly; at rate 0, its first calls."""
    args = short_run(tiny_model_dir, answers, "--judge-retries", str(retries))
    with running_judge_server(ScriptedJudgeConfig(garbage_rate=garbage_rate)) as url:
        result = run_json(capsys, *args, *api_judge(url))
    judging = result["judging"]
    made = result["calls_made"]["judge"]
    assert judging["items"] == 4  # 2 questions x 2 turns, one call each in text mode
    assert judging["estimated_calls"] == 4
    assert judging["max_calls"] == 4 * (1 + retries)
    assert made == (judging["max_calls"] if garbage_rate else judging["estimated_calls"])
    assert judging["parse_retries"] == (4 * retries if garbage_rate else 0)


def test_the_estimate_counts_ten_calls_per_rating_in_probs_mode(
    tiny_model_dir: Path, answers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A probs judge scores each rating 1-10: ten calls per verdict, and no parse retries."""
    args = short_run(tiny_model_dir, answers, "--judge-mode", "probs")
    code, out, err = run_cli(capsys, *args)
    assert code == 0
    assert "judging 4 items needs at most 40 judge calls" in err
    assert re.search(r"\b40 judge calls\b", out), out  # the calls it made
    again = run_json(capsys, *args)  # cached: no call, the same estimate
    assert again["judging"]["estimated_calls"] == again["judging"]["max_calls"] == 40
    assert again["calls_made"]["judge"] == 0


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["run", "--tasks", "mt_bnch"], "unknown task 'mt_bnch' (did you mean mt_bench?)"),
        (["run", "--tasks", "driftcap"], "unknown task 'driftcap' (did you mean driftcaps?)"),
        (
            ["run", "--tasks", "driftcaps", "--judge", "rule:refusal"],
            "unknown judge 'rule:refusal' (did you mean rules:refusal?)",
        ),
        (
            ["run", "--tasks", "driftcaps", "--judge", "refusal-rule"],
            "unknown judge 'refusal-rule' (did you mean refusal-rules?)",
        ),
        (
            ["train", "--method", "dpoo", "--model", "hf:m", "--data", "d", "--out", "o"],
            "unknown method 'dpoo' (did you mean dpo?)",
        ),
    ],
)
def test_misspelt_names_get_the_closest_one(
    argv: list[str], expect: str, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "run":
        argv = [*argv, "--model", f"hf:{tiny_model_dir}"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert expect in line, line


def test_parity_help_counts_the_prompts_it_runs() -> None:
    """`parity`'s description is its module docstring, which states the number of prompts."""
    from evalharness.cli import parity
    from evalharness.engine.parity import PARITY_ITEMS

    assert f"Runs {len(PARITY_ITEMS)} authored prompts" in " ".join(parity.__doc__.split())
