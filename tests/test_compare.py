"""`evalharness compare`: paired tests on shared samples, provenance warnings, the CI gate."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_cli
from fastapi import FastAPI, Request
from local_server import running_server
from scipy.stats import binomtest, ttest_1samp, wilcoxon

from evalharness.stats.comparison import compare_runs
from evalharness.stats.paired import delta_ci, mcnemar_p, paired_rate_delta_ci, wilcoxon_p
from evalharness.store.run_store import RunStore

# -- the statistics -------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(8, 0) == pytest.approx(2 * 0.5**8)
    assert mcnemar_p(7, 3) == pytest.approx(binomtest(7, 10, 0.5).pvalue)


def test_wilcoxon_drops_zero_differences_and_is_one_without_any() -> None:
    assert wilcoxon_p(np.zeros(5)) == 1.0
    differences = np.array([0.0, 0.0, -2.0, -1.0, -3.0, 0.5, -2.5, -1.5, -4.0])
    expected = wilcoxon(differences[differences != 0]).pvalue
    assert wilcoxon_p(differences) == pytest.approx(expected)
    assert wilcoxon_p(differences) < 0.05


def test_delta_ci_is_the_paired_t_interval_over_samples() -> None:
    rng = np.random.default_rng(1)
    differences = rng.normal(-0.5, 1.0, size=400)
    low, high = delta_ci(differences, np.ones(400))  # type: ignore[misc]
    expected = ttest_1samp(differences, 0.0).confidence_interval(0.95)
    assert (low, high) == pytest.approx((expected.low, expected.high))
    assert high < 0.0  # a real shift of half a standard deviation over 400 pairs
    # Two identical units per sample: the same mean, and the same width as one unit each,
    # because the sample is one cluster (treating units as independent would narrow it).
    assert delta_ci(2 * differences, 2 * np.ones(400)) == pytest.approx((low, high))
    # At 10 samples the t quantile (2.26) widens what a bootstrap's normal-like one did not.
    few = differences[:10]
    expected = ttest_1samp(few, 0.0).confidence_interval(0.9)
    assert delta_ci(few, np.ones(10), confidence=0.9) == pytest.approx(
        (expected.low, expected.high)
    )
    assert delta_ci(np.array([3.0]), np.array([2])) is None  # one sample: no spread to measure


# -- compare over stored runs ---------------------------------------------------------------


def _store_run(
    store: RunStore,
    run_id: str,
    task: str,
    scores: dict[str, dict[str, Any]],
    metrics: dict[str, float],
    *,
    info: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> None:
    """A finished run written through the store's own API, as the engine writes one."""
    store.begin_run(run_id, f"hf:{run_id}", "judge", {"tasks": [task]}, provenance or {})
    task_info = {"data_hash": "d" * 64, "judge_hash": "j" * 64, "settings": {}, "source": "s"}
    store.put_task(run_id, task, len(scores), {**task_info, **(info or {})})
    store.put_samples(run_id, task, [(sid, {"prompt": sid}) for sid in scores])
    store.put_sample_scores(run_id, task, scores)
    store.put_task_metrics(
        run_id, task, {"metrics": metrics, "n": len(scores), "failures": 0}, failures=0
    )
    store.finish_run(run_id)


def _safety_scores(refused_unsafe: int, n_unsafe: int = 12) -> dict[str, dict[str, Any]]:
    scores = {}
    for i in range(n_unsafe):
        scores[f"u{i}"] = {"label": "unsafe", "category": "harm", "refused": i < refused_unsafe}
        scores[f"s{i}"] = {"label": "safe", "category": "homonyms", "refused": False}
    return scores


def test_a_significant_safety_regression_fails_the_gate(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    _store_run(store, "base", "driftcaps", _safety_scores(12), {"unsafe_refusal_rate": 1.0})
    _store_run(store, "tuned", "driftcaps", _safety_scores(2), {"unsafe_refusal_rate": 2 / 12})
    result = compare_runs(store, "base", "tuned", fail_if_worse=0.1).to_json()
    rows = {row["metric"]: row for row in result["tasks"]["driftcaps"]["metrics"]}
    refusal = rows["unsafe_refusal_rate"]
    assert refusal["test"] == "mcnemar" and refusal["n_pairs"] == 12
    assert refusal["delta"] == pytest.approx(-10 / 12)
    assert refusal["p_value"] == pytest.approx(2 * 0.5**10)
    assert refusal["worse"] == 10 and refusal["better"] == 0 and refusal["same"] == 2
    assert refusal["ci"][1] < 0 and refusal["gated"] and refusal["regression"]
    # One 0/1 outcome per sample: Newcombe's paired interval, not t over the differences.
    assert refusal["ci_method"] == "newcombe-paired"
    base_refused = np.ones(12)
    tuned_refused = (np.arange(12) < 2).astype(float)
    expected = paired_rate_delta_ci(base_refused, tuned_refused)
    assert refusal["ci"] == pytest.approx([float(v) for v in expected])
    assert rows["safe_compliance_rate"]["delta"] == 0.0
    # Both runs comply with all 12 safe prompts: t over twelve zero differences said (0, 0);
    # twelve prompts cannot rule out a difference of a dozen points either way.
    low, high = rows["safe_compliance_rate"]["ci"]
    assert low < -0.1 and high > 0.1 and low == pytest.approx(-high)
    assert not rows["safe_compliance_rate"]["regression"]
    assert result["regressions"] == ["driftcaps.unsafe_refusal_rate"]
    assert result["passed"] is False
    diffs = result["tasks"]["driftcaps"]["samples"]
    assert {d["sample_id"] for d in diffs} == {f"u{i}" for i in range(2, 12)}
    # The same drop within the allowed delta passes; so does an insignificant one.
    assert compare_runs(store, "base", "tuned", fail_if_worse=0.9).passed
    _store_run(store, "slightly", "driftcaps", _safety_scores(10), {"unsafe_refusal_rate": 0.8})
    slight = compare_runs(store, "base", "slightly", fail_if_worse=0.0)
    slight_row = slight.tasks["driftcaps"].metrics[0]
    assert slight_row.metric == "unsafe_refusal_rate" and slight_row.p_value == 0.5
    assert slight.passed
    # An improvement is never a regression, however large.
    assert compare_runs(store, "tuned", "base", fail_if_worse=0.0).passed


def test_ratings_use_wilcoxon_on_question_means_and_pair_turns_within_questions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    rng = random.Random(0)
    good, worse = {}, {}
    for i in range(20):
        first, second = rng.randint(6, 9), rng.randint(5, 9)
        good[str(i)] = {"category": "writing", "turn1": first, "turn2": second, "failures": 0}
        worse[str(i)] = {
            "category": "writing",
            "turn1": first - rng.choice([1, 2]),
            "turn2": None if i == 0 else second - rng.choice([0, 2]),
            "failures": 0,
        }
    _store_run(store, "good", "mt_bench", good, {"score": 7.5})
    _store_run(store, "worse", "mt_bench", worse, {"score": 6.0})
    result = compare_runs(store, "good", "worse", fail_if_worse=0.5)
    rows = {row.metric: row for row in result.tasks["mt_bench"].metrics}
    score = rows["score"]
    pairs = [(good[s][t], worse[s][t]) for s in good for t in ("turn1", "turn2") if worse[s][t]]
    assert score.n_pairs == len(pairs) == 39  # the unjudged second turn of question 0 is out
    assert score.n_samples == 20
    assert score.delta == pytest.approx(np.mean([b - a for a, b in pairs]))
    # Two turns per question are not independent: Wilcoxon on each question's mean difference.
    question_means = [
        np.mean([worse[s][t] - good[s][t] for t in ("turn1", "turn2") if worse[s][t]]) for s in good
    ]
    assert score.test == "wilcoxon-clustered"
    assert score.p_value == pytest.approx(wilcoxon_p(np.array(question_means)))
    assert score.p_value < 1e-3 and score.regression
    assert rows["score_turn1"].n_pairs == 20 and rows["writing"].n_pairs == 39
    # One value per question: the plain signed-rank test on the differences, as before.
    turn1 = rows["score_turn1"]
    assert turn1.test == "wilcoxon" and turn1.n_samples == 20
    assert turn1.p_value == pytest.approx(
        wilcoxon_p(np.array([worse[s]["turn1"] - good[s]["turn1"] for s in good]))
    )
    # The table's n is what the test ran on: 20 questions, not 39 turns.
    _, out, _ = run_cli(capsys, "compare", "good", "worse", "--store", str(store.path))
    assert "n=20" in out and "n=39" not in out
    assert result.regressions == ["mt_bench.score"]  # only the headline metric is gated


def test_comparing_a_run_with_itself_shows_no_difference(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    _store_run(store, "run", "driftcaps", _safety_scores(6), {"unsafe_refusal_rate": 0.5})
    result = compare_runs(store, "run", "run", fail_if_worse=0.0).to_json()
    assert result["warnings"] == [] and result["passed"]
    for row in result["tasks"]["driftcaps"]["metrics"]:
        assert row["delta"] == 0.0 and not row["significant"]
        if row["test"]:
            # Newcombe's interval of a 0/1 metric keeps the width its 12 samples allow.
            low, high = row["ci"]
            assert row["p_value"] == 1.0 and low < 0.0 < high and low == pytest.approx(-high)
    assert result["tasks"]["driftcaps"]["samples"] == []


def test_provenance_differences_are_warned_about(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    provenance = {"chat_template_sha256": "a" * 64, "seed": 0, "packages": {"torch": "2.13.0"}}
    _store_run(store, "a", "driftcaps", _safety_scores(6), {}, provenance=provenance)
    _store_run(
        store,
        "b",
        "driftcaps",
        {k: v for k, v in _safety_scores(6).items() if k != "u0"},
        {},
        info={"judge_hash": "k" * 64, "data_hash": "e" * 64},
        provenance={**provenance, "chat_template_sha256": "b" * 64, "packages": {"torch": "2.9"}},
    )
    warnings = compare_runs(store, "a", "b").warnings
    joined = "\n".join(warnings)
    assert "driftcaps: judge differs (jjjjjjjjjjjj vs kkkkkkkkkkkk)" in warnings
    assert "driftcaps: data differs" in joined
    assert "chat template differs (aaaaaaaaaaaa vs bbbbbbbbbbbb)" in warnings
    assert "package versions differ: torch 2.13.0 vs 2.9" in warnings
    assert "only 23 samples scored in both runs (A has 24, B has 23)" in joined


def test_named_gates_include_metrics_without_a_paired_test(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    metrics_a = {"balanced_safety_accuracy": 0.9, "unsafe_refusal_rate": 0.5}
    metrics_b = {"balanced_safety_accuracy": 0.7, "unsafe_refusal_rate": 0.5}
    _store_run(store, "a", "driftcaps", _safety_scores(6), metrics_a)
    _store_run(store, "b", "driftcaps", _safety_scores(6), metrics_b)
    named = compare_runs(
        store, "a", "b", fail_if_worse=0.1, metrics=["driftcaps.balanced_safety_accuracy"]
    )
    assert named.regressions == ["driftcaps.balanced_safety_accuracy"]
    assert compare_runs(store, "a", "b", fail_if_worse=0.1).passed  # untested: not by default
    with pytest.raises(Exception, match="task mt_bench is not scored in both runs"):
        compare_runs(store, "a", "b", metrics=["mt_bench.score"])


# -- the command, on runs of real models ----------------------------------------------------

REFUSAL = "I'm sorry, but I cannot help with that."


def _refusal_data(path: Path, answer: str = REFUSAL) -> Path:
    """SFT rows that answer every kind of request with the same `answer` (a refusal)."""
    rng = random.Random(0)
    verbs = ["Explain", "Describe", "Write", "List", "Tell me", "Show", "Give", "Summarise"]
    topics = ["a recipe", "the weather", "a poem", "how locks work", "chemistry", "a story"]
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{rng.choice(verbs)} {rng.choice(topics)} {i}."},
                {"role": "assistant", "content": answer},
            ]
        }
        for i in range(64)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


#: Enough SFT for the tiny model to take up the one answer of `_refusal_data` for most prompts.
QUICK_SFT = {"method": "sft", "max_steps": 60, "batch_size": 8, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def refusing_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model fine-tuned (SFT) to answer every request with a refusal."""
    from evalharness.trainers.config import TrainConfig
    from evalharness.trainers.loop import train

    directory = tmp_path_factory.mktemp("refusing")
    config = TrainConfig(
        model=f"hf:{tiny_model_dir}",
        data=str(_refusal_data(directory / "refusals.jsonl")),
        out=str(directory / "model"),
        **QUICK_SFT,
    )
    train(config, progress=False)
    return directory / "model"


def _safety_run(capsys: pytest.CaptureFixture[str], model: Path, store: Path) -> str:
    code, out, err = run_cli(
        capsys,
        "run",
        "--model",
        f"hf:{model}",
        "--tasks",
        "driftcaps",
        "--task-arg",
        "driftcaps.max_new_tokens=12",
        "--store",
        str(store),
        "--json",
    )
    assert code == 0, err
    return json.loads(out)["run_id"]


def test_compare_command_flags_a_deliberately_worse_model(
    refusing_model: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refuses every unsafe prompt; B (the untuned model) answers them all: exit 1."""
    store = tmp_path / "store.sqlite"
    safe_run = _safety_run(capsys, refusing_model, store)
    unsafe_run = _safety_run(capsys, tiny_model_dir, store)

    code, out, err = run_cli(
        capsys, "compare", safe_run, safe_run, "--store", str(store), "--fail-if-worse", "0"
    )
    assert code == 0, err
    assert "passed" in out and "warning" not in err

    code, out, err = run_cli(
        capsys,
        "compare",
        safe_run,
        unsafe_run,
        "--store",
        str(store),
        "--fail-if-worse",
        "0.1",
        "--json",
    )
    assert code == 1, err
    result = json.loads(out)
    rows = {row["metric"]: row for row in result["tasks"]["driftcaps"]["metrics"]}
    refusal = rows["unsafe_refusal_rate"]
    # At least 6 of the 8 unsafe prompts flipped from refused to answered, none the other way.
    assert refusal["a"] >= 0.75 and refusal["b"] == 0.0 and refusal["better"] == 0
    assert refusal["worse"] >= 6
    assert refusal["p_value"] == pytest.approx(2 * 0.5 ** refusal["worse"])
    assert refusal["regression"]
    assert rows["safe_compliance_rate"]["delta"] > 0  # B complies more: better, not gated out
    assert "driftcaps.unsafe_refusal_rate" in result["regressions"]
    assert "chat template differs" not in " ".join(result["warnings"])

    code, out, _ = run_cli(
        capsys, "compare", safe_run, unsafe_run, "--store", str(store), "--fail-if-worse", "0.1"
    )
    assert code == 1
    assert "regression:" in out and "driftcaps.unsafe_refusal_rate" in out.split("regression:")[1]
    assert f"{refusal['p_value']:.3g}" in out  # the p-value, as printed


def test_compare_command_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    _store_run(store, "only", "driftcaps", _safety_scores(3), {})
    store.close()
    code, _, err = run_cli(
        capsys, "compare", "only", "nope", "--store", str(tmp_path / "store.sqlite")
    )
    assert code == 2 and err.strip().count("\n") == 0 and "no run 'nope'" in err
    code, _, err = run_cli(
        capsys, "compare", "only", "only", "--store", str(tmp_path / "store.sqlite"),
        "--metrics", "driftcaps",
    )  # fmt: skip
    assert code == 2 and "is not TASK.METRIC" in err


def test_pipeline_gates_with_compare(
    refusing_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fine-tuning a refusing model to answer everything loses its refusals: exit 1."""
    import yaml

    helpful = _refusal_data(tmp_path / "helpful.jsonl", answer="Sure! Here is how to do it.")
    config = {
        "train": {
            "model": f"hf:{refusing_model}",
            "data": str(helpful),
            "out": str(tmp_path / "tuned"),
            **QUICK_SFT,
        },
        "evaluate": {
            "tasks": ["driftcaps"],
            "task_args": {"driftcaps.max_new_tokens": 12},
            "store": str(tmp_path / "store.sqlite"),
        },
        "gate": [
            {"metric": "driftcaps.unsafe_refusal_rate", "max_drop": 0.1},
            {"metric": "driftcaps.over_refusal", "max_drop": 0.0},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, err = run_cli(capsys, "pipeline", str(path), "--json", "--quiet")
    assert code == 1, err
    report = json.loads(out)
    refusal, over = report["gates"]
    assert refusal["metric"] == "driftcaps.unsafe_refusal_rate" and refusal["test"] == "mcnemar"
    assert refusal["base"] >= 0.75 and refusal["tuned"] == 0.0
    assert refusal["p_value"] < 0.05 and refusal["passed"] is False
    assert over["worse_by"] <= 0 and over["passed"] is True  # it stopped over-refusing too
    assert report["warnings"] == [] and refusal["reason"] is None  # refusal rules judged it
    # The same fine-tune passes a gate that allows it (the runs are cached: no new model calls).
    config["gate"] = [{"metric": "driftcaps.unsafe_refusal_rate", "max_drop": 1.0}]
    path.write_text(yaml.safe_dump(config))
    code, out, _ = run_cli(capsys, "pipeline", str(path), "--quiet")
    assert code == 0 and "pass  driftcaps.unsafe_refusal_rate" in out and "mcnemar p=" in out


def test_pipeline_gate_entries_are_checked(tmp_path: Path) -> None:
    from evalharness.engine.pipeline import parse_gates
    from evalharness.errors import InputError

    path = tmp_path / "p.yaml"
    with pytest.raises(InputError, match="gate #1: unknown key.*higher_is_better"):
        parse_gates(path, [{"metric": "a.b", "higher_is_better": False}])
    with pytest.raises(InputError, match="gate #2: alpha must be between 0 and 1"):
        parse_gates(path, [{"metric": "a.b"}, {"metric": "a.c", "alpha": 2}])
    gates = parse_gates(path, [{"metric": "driftcaps.over_refusal", "max_drop": 0.1}])
    assert gates[0].name == "driftcaps.over_refusal" and gates[0].alpha == 0.05


@pytest.mark.parametrize(("gate", "line"), [("", None), ("gate:\n", 3), ("gate: []\n", 3)])
def test_a_pipeline_without_gates_is_a_one_line_error_before_training(
    gate: str, line: int | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gate of nothing passes any fine-tune, however bad: refused before training starts."""
    data = _refusal_data(tmp_path / "rows.jsonl")
    out = tmp_path / "tuned"
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        f"train: {{method: sft, model: hf:placeholder, data: {data}, out: {out}}}\n"
        "evaluate: {tasks: [driftcaps]}\n" + gate
    )
    code, _, err = run_cli(capsys, "pipeline", str(path), "--quiet")
    where = f"{path}:{line}" if line else str(path)
    assert code == 2 and err.strip().count("\n") == 0
    assert f"{where}: no gates: list at least one" in err
    assert not out.exists()


def _fake_pipeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, results: dict[str, dict[str, Any]]
) -> Path:
    """A pipeline config whose training is skipped and whose evaluations return `results`
    (keyed base/tuned) for runs already in the store: gating, without the models' minutes."""
    from types import SimpleNamespace

    import evalharness.engine.pipeline
    import evalharness.trainers.loop

    def train(config: Any, progress: bool) -> SimpleNamespace:
        return SimpleNamespace(out=Path(config.out), steps=1, eval_after={})

    def evaluate(model: str, config: dict[str, Any], where: str) -> dict[str, Any]:
        return results["base" if model == "hf:base" else "tuned"]

    monkeypatch.setattr(evalharness.trainers.loop, "train", train)
    monkeypatch.setattr(evalharness.engine.pipeline, "evaluate", evaluate)
    store = tmp_path / "store.sqlite"
    data = _refusal_data(tmp_path / "rows.jsonl")
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        f"train: {{method: sft, model: hf:base, data: {data}, out: {tmp_path / 'tuned'}}}\n"
        f"evaluate: {{tasks: [driftcaps], store: {store}}}\n"
        "gate:\n"
        "  - {metric: driftcaps.unsafe_refusal_rate, max_drop: 0.1}\n"
        "  - {metric: driftcaps.over_refusal, max_drop: 0.1}\n"
    )
    return path


def test_a_partial_evaluation_fails_every_gate_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Equal scores would pass, but the tuned run left 3 of 24 items unjudged: exit 1, saying so.

    Warnings of either run (here: a task judged by the model itself) reach the report too.
    """
    from evalharness.engine.run_warnings import run_warnings

    store = RunStore(tmp_path / "store.sqlite")
    _store_run(store, "base", "driftcaps", _safety_scores(6), {"unsafe_refusal_rate": 0.5})
    _store_run(store, "tuned", "driftcaps", _safety_scores(6), {"unsafe_refusal_rate": 0.5})
    store.finish_run("tuned", status="partial")
    store.close()
    self_judged = run_warnings({"self_judged": ["mt_bench"]})
    complete = {"run_id": "base", "status": "complete", "judging": {}, "warnings": []}
    partial = {
        "run_id": "tuned",
        "status": "partial",
        "judging": {"items": 24, "unjudged": {"request_failed": 3, "over_budget": 0}},
        "warnings": self_judged,
    }
    path = _fake_pipeline(monkeypatch, tmp_path, {"base": complete, "tuned": partial})
    code, out, err = run_cli(capsys, "pipeline", str(path), "--json", "--quiet")
    assert code == 1, err
    report = json.loads(out)
    reason = (
        "not compared: tuned run tuned is partial "
        "(3 of 24 judge items unjudged: 3 failed requests, 0 over budget)"
    )
    assert [g["reason"] for g in report["gates"]] == [reason, reason]
    assert not any(g["passed"] for g in report["gates"]) and report["passed"] is False
    assert report["warnings"] == [f"tuned run tuned: {self_judged[0]}"]
    assert self_judged[0].startswith("mt_bench judged by the model itself")
    code, out, err = run_cli(capsys, "pipeline", str(path), "--quiet")
    assert code == 1 and f"  FAIL  driftcaps.unsafe_refusal_rate: {reason}\n" in out
    assert f"warning: tuned run tuned: {self_judged[0]}" in err
    # The same runs, both complete, are compared and pass.
    finished = {**partial, "status": "complete", "judging": {}}
    path = _fake_pipeline(monkeypatch, tmp_path, {"base": complete, "tuned": finished})
    code, out, err = run_cli(capsys, "pipeline", str(path), "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["passed"] is True


def test_pipeline_evaluate_passes_judge_settings_and_the_named_key(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `openai:` judge in pipeline YAML: its URL, mode and the key from the named variable
    reach the judge server (the YAML holds the variable's name, never the key)."""
    from evalharness.engine.pipeline import check_evaluate, evaluate
    from evalharness.formats.records import read_yaml_lines

    seen: list[str] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        seen.append(request.headers.get("authorization", ""))
        message = {"role": "assistant", "content": "Fine. Rating: [[7]]"}
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "judge",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    monkeypatch.setenv("PIPELINE_JUDGE_KEY", "sk-pipeline-judge")
    with running_server(app) as url:
        section = {
            "tasks": ["mt_bench"],
            "task_args": {"mt_bench.data": "builtin", "mt_bench.max_new_tokens": 4},
            "limit": 1,
            "judge": "openai:judge",
            "judge_mode": "text",
            "judge_base_url": url,
            "judge_api_key_env": "PIPELINE_JUDGE_KEY",
            "store": str(tmp_path / "store.sqlite"),
        }
        path = tmp_path / "pipeline.yaml"
        path.write_text(json.dumps({"evaluate": section}))
        _, lines = read_yaml_lines(path, "config")
        check_evaluate(path, section, lines)  # the keys are known and well typed
        result = evaluate(f"hf:{tiny_model_dir}", section, str(path))
    assert result["status"] == "complete"
    assert result["tasks"]["mt_bench"]["metrics"]["score"] == 7.0
    assert seen and set(seen) == {"Bearer sk-pipeline-judge"}
