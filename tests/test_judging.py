"""Judges end to end: pairwise MT-Bench, flaky endpoints, budgets, FastChat prompts, reward and
rule judges. API judges are real HTTP servers on 127.0.0.1 (the scripted judge server)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_json
from cli_helpers import tiny_run_args as tiny_args

from evalharness.engine.requests import GenerateResult, Result, ScoreResult
from evalharness.errors import InputError
from evalharness.judges.base import side_of
from evalharness.judges.llm import LLMJudge, order_gap
from evalharness.judges.prompts import load_fastchat_prompts, render_fastchat
from evalharness.judges.rules import RuleJudge
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import JudgeItem
from evalharness.testing.judge_server import ScriptedJudgeConfig, running_judge_server


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """The test's own run store (a new SQLite file)."""
    return tmp_path / "runs.sqlite"


def api_judge(base_url: str, *extra: str) -> list[str]:
    return ["--judge", "openai:scripted", "--judge-base-url", base_url, *extra]


def test_pairwise_mt_bench_against_a_stored_baseline_run(
    tiny_model_dir: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    tiny_model_dir: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_args(tiny_model_dir, store, "--limit", "2", "--mode", "pairwise")
    with running_judge_server() as url:
        result = run_json(capsys, *args, "--baseline", f"hf:{tiny_model_dir}", *api_judge(url))
    # The baseline model answers first; the candidate (the same model) then finds every answer
    # in the cache.
    assert result["calls_made"]["baseline"] == 4 and result["calls_made"]["model"] == 0
    assert result["tasks"]["mt_bench"]["metrics"]["tie_rate"] == 1.0  # identical answers
    code, _, err = run_cli(capsys, *args, "--baseline", "nosuchrun", "--judge", "self")
    assert code == 2 and "neither a run" in err


def test_pairwise_mt_bench_with_a_local_probs_judge_reports_swap_consistency(
    tiny_model_dir: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    judge = ["--judge", "self", "--judge-mode", "probs"]
    short = tiny_args(tiny_model_dir, store, "--limit", "2", max_new_tokens=3)
    baseline = run_json(capsys, *short, *judge)
    long = tiny_args(tiny_model_dir, store, "--limit", "2", "--mode", "pairwise")
    result = run_json(capsys, *long, "--baseline", baseline["run_id"], *judge)
    entry = result["tasks"]["mt_bench"]
    metrics = entry["metrics"]
    assert result["calls_made"]["judge"] == 4 * 2 * 2  # 2 orders x P(A), P(B)
    assert entry["counts"]["verdicts"] == 4 and entry["counts"]["both_orders"] == 4
    # Recomputed from the stored passes: the winner is the side of the mean P(candidate) (a
    # flip is a tie only at exactly 0.5), consistency and the gap compare the two orders.
    runs = RunStore(store)
    verdicts = list(runs.get_run_verdicts(result["run_id"], "mt_bench").values())
    runs.close()
    sides, agree, gaps = [], [], []
    for verdict in verdicts:
        first, second = (
            next(x["p_candidate"] for x in verdict["passes"] if x["candidate_first"] is order)
            for order in (True, False)
        )
        sides.append(verdict["winner"])
        assert verdict["winner"] == side_of((first + second) / 2)
        agree.append(side_of(first) == side_of(second))
        gaps.append(abs(first - second))
    assert len(verdicts) == 4
    assert metrics["tie_rate"] == sides.count("tie") / 4
    assert metrics["swap_consistency"] == pytest.approx(sum(agree) / 4)
    assert metrics["order_gap"] == pytest.approx(sum(gaps) / 4, abs=1e-6)


def pairwise_item(orders: tuple[bool, ...] = (True, False), baseline: str = "theirs") -> JudgeItem:
    fields = {"question_1": "Q?", "answer_1": "mine", "baseline_1": baseline, "turn": 1}
    return JudgeItem("pairwise", "pairwise", fields, orders)


def probs_results(*p_a: float) -> list[Result]:
    """Log-probs of "A]]" and "B]]" per order whose renormalised P(A) is each of `p_a`."""
    return [ScoreResult(math.log(p), 2, False) for q in p_a for p in (q, 1.0 - q)]


def text_results(*texts: str) -> list[Result]:
    return [GenerateResult(text) for text in texts]


@pytest.mark.parametrize(
    ("p_a", "preference", "winner", "consistent", "gap"),
    [
        # P(candidate) 0.8 shown first, 0.3 shown second: a flip, averaged to a weak win.
        ((0.8, 0.7), 1.55, "candidate", False, 0.5),
        ((0.8, 0.4), 1.7, "candidate", True, 0.2),  # 0.8 and 0.6: the same side
        ((0.2, 0.9), 1.15, "baseline", True, 0.1),  # 0.2 and 0.1
        ((0.8, 0.8), 1.5, "tie", False, 0.6),  # 0.8 and 0.2: a flip averaging to a tie
        ((0.5, 0.5), 1.5, "tie", True, 0.0),  # exactly 0.5 twice: a consistent tie
        ((0.5, 0.4), 1.55, "candidate", False, 0.1),  # 0.5 then 0.6: not the same side
    ],
)
def test_probs_mode_averages_the_orders(
    p_a: tuple[float, float], preference: float, winner: str, consistent: bool, gap: float
) -> None:
    judge = LLMJudge(backend=None, mode="probs", name="probe")  # type: ignore[arg-type]
    verdict = judge.verdict(pairwise_item(), probs_results(*p_a))
    assert verdict["preference"] == pytest.approx(preference)
    assert verdict["winner"] == winner and verdict["consistent"] is consistent
    assert order_gap(verdict) == pytest.approx(gap)


@pytest.mark.parametrize(
    ("texts", "preference", "winner", "consistent"),
    [
        (("[[A]]", "[[A]]"), 1.5, "tie", False),  # always the first answer: a flip is a tie
        (("[[A]]", "[[B]]"), 2.0, "candidate", True),
        (("[[B]]", "[[A]]"), 1.0, "baseline", True),
        (("[[C]]", "[[C]]"), 1.5, "tie", True),
        (("[[C]]", "[[B]]"), 1.5, "tie", False),  # tie, then candidate: they disagree
    ],
)
def test_text_mode_counts_a_flip_as_a_tie(
    texts: tuple[str, str], preference: float, winner: str, consistent: bool
) -> None:
    judge = LLMJudge(backend=None, mode="text", name="probe")  # type: ignore[arg-type]
    verdict = judge.verdict(pairwise_item(), text_results(*texts))
    assert verdict["preference"] == preference and verdict["winner"] == winner
    assert verdict["consistent"] is consistent and order_gap(verdict) is None


def test_one_order_or_identical_answers_have_no_swap_consistency() -> None:
    judge = LLMJudge(backend=None, mode="probs", name="probe")  # type: ignore[arg-type]
    single = judge.verdict(pairwise_item((False,)), probs_results(0.3))
    assert single["preference"] == pytest.approx(1.7) and single["consistent"] is None
    assert order_gap(single) is None
    same = pairwise_item(baseline="mine")
    assert judge.requests_for(same) == []
    verdict = judge.verdict(same, [])
    assert verdict["winner"] == "tie" and verdict["consistent"] is None
    assert order_gap(verdict) is None


@pytest.mark.timing
def test_flaky_judge_endpoint_completes_counts_failures_and_never_rejudges(
    tiny_model_dir: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    tiny_model_dir: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_args(tiny_model_dir, store, "--limit", "3", "--judge-mode", "text")
    with running_judge_server() as url:
        code, _, err = run_cli(capsys, *args, *api_judge(url, "--max-judge-calls", "4"))
        assert code == 0
        assert "judging 6 items needs 6 judge calls if every verdict parses, at most 18" in err
        assert "--max-judge-calls 4 is below" in err
        capped = run_json(capsys, *args, *api_judge(url, "--max-judge-calls", "4"))
        # The first invocation judged 4 items; this one is a resume needing only 2 calls.
        assert capped["calls_made"]["judge"] == 2 and capped["status"] == "complete"


def test_fastchat_judge_prompts_reproduce_its_protocol(
    tiny_model_dir: Path, tmp_path: Path, store: Path, capsys: pytest.CaptureFixture[str]
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
    tiny_model_dir: Path, tmp_path: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_models import build_tiny_reward_model

    reward_dir = build_tiny_reward_model(tmp_path / "rm")
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
