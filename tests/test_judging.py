"""Judges end to end: pairwise MT-Bench, flaky endpoints, budgets, FastChat prompts, reward and
rule judges. API judges are real HTTP servers on 127.0.0.1 (the scripted judge server)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_json
from cli_helpers import tiny_run_args as tiny_args

from evalharness.errors import InputError
from evalharness.judges.prompts import load_fastchat_prompts, render_fastchat
from evalharness.judges.rules import RuleJudge
from evalharness.tasks.base import JudgeItem
from evalharness.testing.judge_server import ScriptedJudgeConfig, running_judge_server


def api_judge(base_url: str, *extra: str) -> list[str]:
    return ["--judge", "openai:scripted", "--judge-base-url", base_url, *extra]


def test_pairwise_mt_bench_against_a_stored_baseline_run(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    with running_judge_server(ScriptedJudgeConfig(pairwise_rule="longer")) as url:
        # The baseline answers with at most 3 tokens, the candidate with up to 12.
        short = tiny_args(tiny_model_dir, store, "--limit", "3", max_new_tokens=3)
        baseline = run_json(capsys, *short, *api_judge(url))
        long = tiny_args(tiny_model_dir, store, "--limit", "3")
        pairwise = ["--mode", "pairwise", "--baseline", baseline["run_id"]]
        fair = run_json(capsys, *long, *pairwise, *api_judge(url))
    entry = fair["tasks"]["mt_bench"]
    metrics = entry["metrics"]
    assert entry["counts"]["verdicts"] == 6 and entry["counts"]["both_orders"] == 6
    assert metrics["win_rate"] + metrics["tie_rate"] + metrics["loss_rate"] == pytest.approx(1.0)
    # The judge prefers the longer answer whatever its position: never flips with the order.
    assert metrics["swap_consistency"] == 1.0
    assert metrics["win_rate"] > 0.5 and metrics["loss_rate"] == 0.0
    assert fair["calls_made"]["model"] == 6 and fair["calls_made"]["judge"] == 12  # 2 orders

    with running_judge_server(ScriptedJudgeConfig(pairwise_rule="first")) as url:
        biased = run_json(capsys, *long, *pairwise, *api_judge(url))
    metrics = biased["tasks"]["mt_bench"]["metrics"]
    # Always "A": every verdict flips when the order is swapped, so each one is a tie.
    assert metrics["swap_consistency"] == 0.0 and metrics["tie_rate"] == 1.0
    assert biased["calls_made"]["model"] == 0  # answers came from the cache


def test_pairwise_baseline_can_be_a_model_and_unknown_baseline_is_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    args = tiny_args(tiny_model_dir, store, "--limit", "2", "--mode", "pairwise")
    with running_judge_server() as url:
        result = run_json(capsys, *args, "--baseline", f"hf:{tiny_model_dir}", *api_judge(url))
    # The baseline model answers first; the candidate (the same model) then finds every answer
    # in the cache.
    assert result["calls_made"]["baseline"] == 4 and result["calls_made"]["model"] == 0
    assert result["tasks"]["mt_bench"]["metrics"]["tie_rate"] == 1.0  # identical answers
    code, _, err = run_cli(capsys, *args, "--baseline", "nosuchrun", "--judge", "self")
    assert code == 2 and "neither a run" in err


@pytest.mark.timing
def test_flaky_judge_endpoint_completes_counts_failures_and_never_rejudges(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    config = ScriptedJudgeConfig(
        garbage_rate=0.25,
        rate_limit_rate=0.2,
        server_error_rate=0.2,
        timeout_rate=0.1,
        timeout_sleep_s=30.0,  # far past --judge-timeout: a hang is never mistaken for load
        seed=3,
    )
    args = tiny_args(tiny_model_dir, store, "--limit", "4", "--judge-mode", "text")
    flaky = [*args, "--judge-timeout", "3", "--judge-concurrency", "8"]
    with running_judge_server(config) as url:
        # No HTTP retries: requests that fail now leave their items unjudged, not the run dead.
        first = run_json(capsys, *flaky, *api_judge(url, "--judge-http-retries", "0"))
        judging = first["judging"]
        assert first["status"] == "partial"
        unjudged = judging["unjudged"]["request_failed"]
        assert unjudged > 0 and judging["judged"] + unjudged == judging["items"] == 8
        assert judging["parse_retries"] > 0  # garbage verdicts were asked again
        assert {"http_429", "http_500"} <= set(judging["http_errors"])

        second = run_json(capsys, *flaky, *api_judge(url))
        assert second["status"] == "complete" and second["run_id"] == first["run_id"]
        assert second["judging"]["cached"] == judging["judged"]  # nothing judged twice
        assert second["judging"]["judged"] == unjudged
        assert second["calls_made"]["model"] == 0
        ratings = second["tasks"]["mt_bench"]
        assert ratings["counts"]["ratings"] + ratings["failures"] == 8

        third = run_json(capsys, *flaky, *api_judge(url))
    assert third["calls_made"] == {"model": 0, "judge": 0}
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 8


def test_judge_call_budget_stops_early_and_a_rerun_continues(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    args = tiny_args(tiny_model_dir, store, "--limit", "3", "--judge-mode", "text")
    with running_judge_server() as url:
        code, _, err = run_cli(capsys, *args, *api_judge(url, "--max-judge-calls", "4"))
        assert code == 0
        assert "at most 6 judge calls" in err and "--max-judge-calls 4 is below" in err
        capped = run_json(capsys, *args, *api_judge(url, "--max-judge-calls", "4"))
        # The first invocation judged 4 items; this one is a resume needing only 2 calls.
        assert capped["calls_made"]["judge"] == 2 and capped["status"] == "complete"


def test_fastchat_judge_prompts_reproduce_its_protocol(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import shared_data

    prompts_path = shared_data("mt_bench/judge_prompts.jsonl")
    prompts = load_fastchat_prompts(prompts_path)
    assert len(prompts) == 8
    fields = {
        "question_1": "Q1",
        "question_2": "Q2",
        "answer_1": "A1",
        "answer_2": "A2",
        "reference": ["R1", "R2"],
        "fastchat_prompt": prompts["single-math-v1-multi-turn"],
    }
    system, user = render_fastchat(fields)
    assert system.content == prompts["single-math-v1-multi-turn"]["system_prompt"]
    assert user.content == prompts["single-math-v1-multi-turn"]["prompt_template"].format(
        question_1="Q1", question_2="Q2", answer_1="A1", answer_2="A2",
        ref_answer_1="R1", ref_answer_2="R2",
    )  # fmt: skip
    store = tmp_path / "runs.sqlite"
    args = tiny_args(tiny_model_dir, store, "--limit", "2", "--judge-mode", "text")
    args += ["--task-arg", f"mt_bench.judge_prompts={prompts_path}"]
    with running_judge_server() as url:
        result = run_json(capsys, *args, *api_judge(url))
    entry = result["tasks"]["mt_bench"]
    assert entry["failures"] == 0 and 1 <= entry["metrics"]["score"] <= 10
    (bad := tmp_path / "prompts.jsonl").write_text('{"name": "single-v1"}\n')
    with pytest.raises(InputError, match=r"prompts.jsonl:1: missing field 'type'"):
        load_fastchat_prompts(bad)


def test_reward_model_judge_rates_and_compares(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_models import build_tiny_reward_model

    reward_dir = build_tiny_reward_model(tmp_path / "rm")
    store = tmp_path / "runs.sqlite"
    args = tiny_args(tiny_model_dir, store, "--limit", "2", "--judge", f"rm:{reward_dir}")
    single = run_json(capsys, *args)
    entry = single["tasks"]["mt_bench"]
    assert entry["failures"] == 0 and single["calls_made"]["judge"] == 4  # one per answer
    assert entry["metrics"]["score"] != pytest.approx(0.0)
    short = tiny_args(tiny_model_dir, store, "--limit", "2", max_new_tokens=3)
    baseline = run_json(capsys, *short, "--judge", f"rm:{reward_dir}")
    pairwise = run_json(capsys, *args, "--mode", "pairwise", "--baseline", baseline["run_id"])
    metrics = pairwise["tasks"]["mt_bench"]["metrics"]
    assert "swap_consistency" not in metrics  # a reward model has no position to swap
    assert pairwise["calls_made"]["judge"] == 8  # candidate + baseline reward per verdict


def test_rule_judge_labels_refusals_and_reads_yaml_rules(tmp_path: Path) -> None:
    judge = RuleJudge.from_spec("rules:refusal")
    item = JudgeItem("classify", "", {"text": "I'm sorry, but I can't help with that."})
    assert judge.verdict(item, [])["label"] == "full_refusal"
    # Only the opening counts (XSTest's rule): a late "I cannot" does not make a refusal.
    later = "Here is an overview of locks. " * 10 + "However, I cannot give bypass steps."
    assert judge.classify(later)["label"] == "full_compliance"
    assert judge.classify("Sure! Step 1: preheat the oven.")["label"] == "full_compliance"

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - label: polite\n    patterns: ['\\bplease\\b']\ndefault: curt\n")
    custom = RuleJudge.from_spec(f"rules:{rules}")
    assert custom.classify("Please sit")["label"] == "polite"
    assert custom.classify("Sit")["label"] == "curt"
    rules.write_text("rules: [\n")
    with pytest.raises(InputError, match="rules.yaml:"):
        RuleJudge.from_spec(f"rules:{rules}")
    with pytest.raises(InputError, match="cannot give 'rating' verdicts"):
        judge.requests_for(JudgeItem("rating", "", {}))
    # Any labels classify; refusal verdicts only in the refusal classes, default included.
    custom.check_protocol("classify")
    with pytest.raises(InputError, match="gives labels polite, curt, but a task reading refusal"):
        custom.check_protocol("refusal")
    judge.check_protocol("refusal")
