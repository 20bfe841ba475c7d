"""AlpacaEval-style task: importing outputs and annotations, judging existing outputs, the
length-controlled fit pooled across runs, agreement between annotators."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_cli, run_json

from evalharness.store import RunStore
from evalharness.tasks.alpaca_eval.loader import BUILTIN
from evalharness.testing.judge_server import ScriptedJudgeConfig, running_judge_server


def reference_rows(path: Path = BUILTIN) -> list[dict[str, Any]]:
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def make_model(
    tmp_path: Path, name: str, references: list[dict[str, Any]], outputs: list[str],
    preferences: list[Any], annotator: str = "weighted_alpaca_eval_gpt4_turbo",
) -> tuple[Path, Path]:  # fmt: skip
    """model_outputs.json and annotations.json in AlpacaEval's formats."""
    model_outputs = [
        {"instruction": r["instruction"], "output": o, "generator": name, "dataset": r["dataset"]}
        for r, o in zip(references, outputs, strict=True)
    ]
    annotations = [
        {
            "instruction": r["instruction"],
            "output_1": r["output"],
            "generator_1": "reference_model",
            "output_2": o,
            "generator_2": name,
            "annotator": annotator,
            "preference": p,
        }
        for r, o, p in zip(references, outputs, preferences, strict=True)
    ]
    outputs_path = write_json(tmp_path / f"{name}_outputs.json", model_outputs)
    return outputs_path, write_json(tmp_path / f"{name}_annotations.json", annotations)


def expected_head_to_head(preferences: list[Any]) -> dict[str, float]:
    """Computed independently of the harness, from AlpacaEval's published definition."""
    values = np.array([1.5 if p == 0 else np.nan if p is None else p for p in preferences], float)
    x = values[~np.isnan(values)] - 1.0
    return {
        "win_rate": 100 * x.mean(),
        "standard_error": 100 * x.std(ddof=1) / math.sqrt(len(x)),
        "n_total": len(x),
        "n_draws": int((x == 0.5).sum()),
        "n_wins": int((x > 0.5).sum()),
    }


def import_run(capsys: pytest.CaptureFixture[str], outputs: Path, *extra: str) -> dict:
    return run_json(capsys, "import", "alpaca-eval", "--outputs", str(outputs), *extra)


def test_import_recomputes_published_style_metrics_without_judge_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    references = reference_rows()
    outputs = [r["output"] + " Extra detail." for r in references]
    preferences = [1.9, 1.1, 0, 1.5, None, 2.0, 1.0, 1.73, 1.2, 1.6, 1.5, 1.05]
    model_outputs, annotations = make_model(tmp_path, "model_a", references, outputs, preferences)
    result = import_run(capsys, model_outputs, "--annotations", str(annotations))
    assert result["calls_made"] == {"model": 0, "judge": 0}
    shown = run_json(capsys, "show", result["run_id"])
    metrics = shown["tasks"]["alpaca_eval"]["metrics"]
    expected = expected_head_to_head(preferences)
    for key in ("win_rate", "standard_error"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key
    for key in ("n_total", "n_draws", "n_wins"):
        assert metrics[key] == expected[key], key
    assert shown["tasks"]["alpaca_eval"]["failures"] == 1  # the annotation without preference
    assert metrics["avg_length"] == int(np.mean([len(o) for o in outputs]))
    assert metrics["lc_fit"] == "single_run" and 0 < metrics["length_controlled_winrate"] < 100


def test_joint_length_control_across_runs_of_one_annotator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    references = reference_rows()
    rng = np.random.default_rng(0)

    def length_biased_judge(outputs: list[str]) -> list[float]:
        """Equal quality, but the judge prefers whichever answer is longer."""
        return [
            1.0 + 1.0 / (1.0 + math.exp(-1.5 * math.tanh((len(o) - len(r["output"])) / 150)))
            for o, r in zip(outputs, references, strict=True)
        ]

    filler = "This point matters because it shapes the result. "
    plain = [r["output"] + filler * int(rng.integers(0, 3)) for r in references]
    padded = [o + filler * int(rng.integers(3, 8)) for o in plain]
    short = [r["output"][: int(rng.integers(20, 60))] for r in references]
    runs = {}
    for name, outs in (("plain", plain), ("padded", padded), ("short", short)):
        prefs = length_biased_judge(outs)
        outputs_path, annotations = make_model(tmp_path, name, references, outs, prefs)
        runs[name] = import_run(capsys, outputs_path, "--annotations", str(annotations))
    plain = [r["output"] for r in references]
    # The reference against itself: 50 exactly, raw and length-controlled.
    same, same_annotations = make_model(
        tmp_path, "reference_model", references, plain, [1.5] * len(references)
    )
    itself = import_run(capsys, same, "--annotations", str(same_annotations))
    assert itself["tasks"]["alpaca_eval"]["metrics"]["win_rate"] == pytest.approx(50.0)
    assert itself["tasks"]["alpaca_eval"]["metrics"]["length_controlled_winrate"] == (
        pytest.approx(50.0, abs=1e-6)
    )
    shown = {
        name: run_json(capsys, "show", run["run_id"])["tasks"]["alpaca_eval"]["metrics"]
        for name, run in runs.items()
    }
    # Earlier runs were refitted when later runs of the same annotator arrived.
    assert all(m["lc_fit"].startswith("joint over") for m in shown.values())
    raw_gap = shown["padded"]["win_rate"] - shown["plain"]["win_rate"]
    lc_gap = (
        shown["padded"]["length_controlled_winrate"] - shown["plain"]["length_controlled_winrate"]
    )
    assert raw_gap > 15
    assert abs(lc_gap) < raw_gap / 3
    # The short model is not rewarded for gaming length either way: LC stays near 50.
    assert abs(shown["short"]["length_controlled_winrate"] - 50) < 10


def test_judging_existing_outputs_over_http_and_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    references = reference_rows()
    outputs = [r["output"] + " More." if i % 2 else r["output"] for i, r in enumerate(references)]
    model_outputs, _ = make_model(tmp_path, "model_b", references, outputs, [1.5] * 12)
    store = str(tmp_path / "runs.sqlite")
    with running_judge_server(ScriptedJudgeConfig(pairwise_rule="longer")) as url:
        judge = ["--judge", "openai:scripted", "--judge-base-url", url, "--store", store]
        args = ["--reference", str(BUILTIN), *judge]
        first = import_run(capsys, model_outputs, *args)
        again = import_run(capsys, model_outputs, *args)
    # Identical outputs are ties without a judge call; the rest are judged once, in one order.
    assert first["calls_made"] == {"model": 0, "judge": 6}
    metrics = first["tasks"]["alpaca_eval"]["metrics"]
    assert metrics["n_wins"] == 6 and metrics["n_draws"] == 6 and metrics["win_rate"] == 75.0
    assert again["calls_made"] == {"model": 0, "judge": 0}


def test_local_judge_both_orders_gives_continuous_preferences(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["data=builtin", "orders=both", "max_new_tokens=6"]
    args = ["run", "--model", f"hf:{tiny_model_dir}", "--tasks", "alpaca_eval", "--limit", "4"]
    for option in options:
        args += ["--task-arg", f"alpaca_eval.{option}"]
    store = tmp_path / "runs.sqlite"
    result = run_json(capsys, *args, "--judge-mode", "probs", "--store", str(store))
    entry = result["tasks"]["alpaca_eval"]
    assert result["calls_made"]["judge"] == 4 * 2 * 2  # 2 orders x P(A), P(B)
    assert entry["failures"] == 0 and entry["counts"]["both_orders"] == 4
    assert 0.0 < entry["metrics"]["win_rate"] < 100.0
    for key in ("standard_error", "n_wins", "n_draws", "n_total", "avg_length"):
        assert key in entry["metrics"]
    assert entry["metrics"]["lc_variant"] == "minimal"
    # The documented probs rule, recomputed from each stored verdict's two orders: preference
    # = 1 + mean P(candidate); consistent = both orders on the same side of 0.5; the gap is
    # |P(candidate) shown first - P(candidate) shown second|.
    runs = RunStore(store)
    verdicts = runs.get_run_verdicts(result["run_id"], "alpaca_eval").values()
    runs.close()
    agree, gaps = [], []
    for verdict in verdicts:
        p = {x["candidate_first"]: x["p_candidate"] for x in verdict["passes"]}
        assert verdict["preference"] == pytest.approx(1.0 + (p[True] + p[False]) / 2, abs=1e-6)
        agree.append((p[True] > 0.5) == (p[False] > 0.5) and (p[True] < 0.5) == (p[False] < 0.5))
        gaps.append(abs(p[True] - p[False]))
    assert len(agree) == 4
    assert entry["metrics"]["swap_consistency"] == pytest.approx(sum(agree) / 4)
    assert entry["metrics"]["order_gap"] == pytest.approx(sum(gaps) / 4, abs=1e-6)


def test_agreement_between_two_annotators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    references = reference_rows()
    outputs = [r["output"] + "!" for r in references]
    first = [2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 1.5, 2.0, 1.0, 2.0, 1.0, 2.0]
    second = [2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 1.5, 2.0, 1.0, 2.0, 1.5, 2.0]
    run_ids = []
    for annotator, prefs in (("judge_x", first), ("judge_y", second)):
        model_outputs, annotations = make_model(
            tmp_path, "model_c", references, outputs, prefs, annotator=annotator
        )
        run_ids.append(import_run(capsys, model_outputs, "--annotations", str(annotations)))
    result = run_json(capsys, "agreement", run_ids[0]["run_id"], run_ids[1]["run_id"])
    assert result["n"] == 12
    assert result["raw_agreement"] == pytest.approx(9 / 12)
    assert result["n_without_ties"] == 10
    assert result["raw_agreement_without_ties"] == pytest.approx(8 / 10)
    assert -1.0 <= result["cohen_kappa"] <= 1.0


def test_bad_import_inputs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    references = reference_rows()
    model_outputs, annotations = make_model(tmp_path, "m", references, ["x"] * 12, [2.0] * 12)
    rows = json.loads(annotations.read_text())
    del rows[3]["preference"]
    write_json(annotations, rows)
    code, _, err = run_cli(
        capsys, "import", "alpaca-eval", "--outputs", str(model_outputs),
        "--annotations", str(annotations),
    )  # fmt: skip
    assert code == 2 and "m_annotations.json[3]: missing field 'preference'" in err
    code, _, err = run_cli(capsys, "import", "alpaca-eval", "--outputs", str(model_outputs))
    assert code == 2 and "--annotations" in err and len(err.strip().splitlines()) == 1


def test_real_eval_set_loads_with_synthetic_annotations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import shared_data

    eval_set = shared_data("alpaca_eval/eval_set.jsonl")
    references = reference_rows(eval_set)
    assert len(references) == 805
    rng = np.random.default_rng(1)
    preferences = [float(p) for p in rng.uniform(1.0, 2.0, len(references))]
    outputs = [r["output"][:200] for r in references]
    model_outputs, annotations = make_model(tmp_path, "m805", references, outputs, preferences)
    result = import_run(
        capsys, model_outputs, "--annotations", str(annotations), "--reference", str(eval_set)
    )
    metrics = result["tasks"]["alpaca_eval"]["metrics"]
    expected = expected_head_to_head(preferences)
    assert metrics["n_total"] == 805
    assert metrics["win_rate"] == pytest.approx(expected["win_rate"], abs=1e-9)
    assert metrics["standard_error"] == pytest.approx(expected["standard_error"], abs=1e-9)
    assert set(metrics) >= {f"win_rate_{d}" for d in ("koala", "oasst", "vicuna")}


def alpaca_entry(result: dict[str, Any]) -> dict[str, Any]:
    return result["tasks"]["alpaca_eval"]


def annotated_model(tmp_path: Path, preferences: list[float]) -> tuple[Path, Path]:
    """A model "m" whose 12 outputs extend the references, annotated with `preferences`."""
    references = reference_rows()
    outputs = [r["output"] + " More." for r in references]
    return make_model(tmp_path, "m", references, outputs, preferences)


def test_a_corrected_annotations_file_gives_new_verdicts_and_a_new_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preferences = [2.0] * 6 + [1.0] * 6
    model_outputs, annotations = annotated_model(tmp_path, preferences)
    first = import_run(capsys, model_outputs, "--annotations", str(annotations))
    rows = json.loads(annotations.read_text())
    rows[0]["preference"] = 1.0  # the correction
    write_json(annotations, rows)
    second = import_run(capsys, model_outputs, "--annotations", str(annotations))
    assert second["run_id"] != first["run_id"]
    assert second["judging"]["judged"] == 12 and second["judging"]["cached"] == 0
    corrected = expected_head_to_head([1.0] + preferences[1:])["win_rate"]
    assert alpaca_entry(second)["metrics"]["win_rate"] == pytest.approx(corrected)
    assert alpaca_entry(first)["metrics"]["win_rate"] == pytest.approx(50.0)


def test_the_same_annotations_file_twice_is_one_run_and_no_new_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_outputs, annotations = annotated_model(tmp_path, [1.5] * 12)
    first = import_run(capsys, model_outputs, "--annotations", str(annotations))
    again = import_run(capsys, model_outputs, "--annotations", str(annotations))
    assert again["run_id"] == first["run_id"]
    assert again["calls_made"] == {"model": 0, "judge": 0}
    assert again["judging"]["judged"] == 0 and again["judging"]["cached"] == 12


def test_annotations_of_other_outputs_are_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_outputs, annotations = annotated_model(tmp_path, [2.0] * 12)
    rows = json.loads(annotations.read_text())
    rows[2]["output_2"] = "An older generation of this answer."
    rows[5]["output_2"] = f"  {rows[5]['output_2']}\n"  # whitespace at the ends: the same output
    write_json(annotations, rows)
    args = ("import", "alpaca-eval", "--outputs", str(model_outputs), "--annotations")
    code, out, err = run_cli(capsys, *args, str(annotations))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "m_annotations.json: 1 annotation(s) judged an output_2 other than" in err
    assert repr(rows[2]["instruction"][:50]) in err and "--allow-mismatch" in err
    code, out, err = run_cli(capsys, *args, str(annotations), "--allow-mismatch", "--json")
    assert code == 0, err
    assert "1 annotation(s)" in err and "counted as failures" in err
    entry = alpaca_entry(json.loads(out))
    assert entry["failures"] == 1 and entry["counts"]["failures_annotation_mismatch"] == 1
    assert entry["metrics"]["n_total"] == 11


def test_an_instruction_missing_from_the_annotations_is_asked_of_the_next_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_outputs, annotations = annotated_model(tmp_path, [2.0] * 12)
    complete = json.loads(annotations.read_text())
    write_json(annotations, complete[:4] + complete[5:])
    args = ("--annotations", str(annotations), "--reference", str(BUILTIN))
    partial = import_run(capsys, model_outputs, *args)
    entry = alpaca_entry(partial)
    assert entry["failures"] == 1 and entry["counts"]["failures_not_in_annotations_file"] == 1
    assert entry["metrics"]["n_total"] == 11
    write_json(annotations, complete)
    fixed = import_run(capsys, model_outputs, *args)
    assert fixed["run_id"] != partial["run_id"]
    assert alpaca_entry(fixed)["failures"] == 0
    assert alpaca_entry(fixed)["metrics"]["n_total"] == 12


# ---------------------------------------------------------------------------------------------
# The joint length-controlled fit: who shares it, and the record of what it changed


def lengthy_model(tmp_path: Path, name: str, extra: int) -> tuple[Path, Path]:
    """A model whose answers are the references padded by up to about 2 * `extra` characters,
    annotated by a judge whose soft preference rises with the padding."""
    references = reference_rows()
    rng = np.random.default_rng(len(name) + extra)
    pads = [int(rng.integers(0, 2 * extra + 1)) for _ in references]
    outputs = [
        r["output"] + " More." * (pad // 6 + 1) for r, pad in zip(references, pads, strict=True)
    ]
    prefs = [
        1.0 + 1.0 / (1.0 + math.exp(-(len(o) - len(r["output"]) - extra) / 40.0))
        for o, r in zip(outputs, references, strict=True)
    ]
    return make_model(tmp_path, name, references, outputs, prefs)


def lc_entry(capsys: pytest.CaptureFixture[str], run_id: str) -> dict[str, Any]:
    return alpaca_entry(run_json(capsys, "show", run_id))


def test_only_runs_with_the_same_length_control_variant_share_a_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    difficulty = write_json(
        tmp_path / "difficulty.json",
        [
            {"instruction": r["instruction"], "instruction_difficulty": k % 3 - 1.0}
            for k, r in enumerate(reference_rows())
        ],
    )
    runs = {}
    for name, extra in (("m1", 30), ("m2", 90), ("m3", 40), ("m4", 120)):
        outputs, annotations = lengthy_model(tmp_path, name, extra)
        args = ["--annotations", str(annotations)]
        if name in ("m3", "m4"):
            args += ["--difficulty", str(difficulty)]
        runs[name] = import_run(capsys, outputs, *args)["run_id"]
    for name, variant, partner in (
        ("m1", "minimal", "m2"), ("m2", "minimal", "m1"), ("m3", "full", "m4"),
        ("m4", "full", "m3"),
    ):  # fmt: skip
        entry = lc_entry(capsys, runs[name])
        assert entry["metrics"]["lc_variant"] == variant, name
        assert entry["metrics"]["lc_fit"] == "joint over 2 runs of this judge", name
        assert entry["pool_history"][-1]["runs"] == sorted([runs[name], runs[partner]])


def test_only_runs_against_the_same_baseline_share_a_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    references = reference_rows()

    def outputs_file(name: str, extra: int) -> Path:
        rng = np.random.default_rng(extra)
        rows = [
            {"instruction": r["instruction"], "output": r["output"][: int(rng.integers(10, 80))]
             + " More." * int(rng.integers(0, extra)), "generator": name}
            for r in references
        ]  # fmt: skip
        return write_json(tmp_path / f"{name}.json", rows)

    baselines = {"b1": outputs_file("b1", 6), "b2": outputs_file("b2", 12)}
    store = str(tmp_path / "runs.sqlite")
    runs = {}
    with running_judge_server(ScriptedJudgeConfig(pairwise_rule="longer")) as url:
        for name, extra, baseline in (("m1", 4, "b1"), ("m2", 9, "b1"), ("m3", 5, "b2"),
                                      ("m4", 10, "b2")):  # fmt: skip
            result = run_json(
                capsys, "run", "--model", f"outputs:{outputs_file(name, extra)}",
                "--tasks", "alpaca_eval", "--task-arg", "alpaca_eval.data=builtin",
                "--task-arg", f"alpaca_eval.baseline=outputs:{baselines[baseline]}",
                "--judge", "openai:scripted", "--judge-base-url", url, "--store", store,
            )  # fmt: skip
            runs[name] = result["run_id"]
    for name, partner in (("m1", "m2"), ("m2", "m1"), ("m3", "m4"), ("m4", "m3")):
        entry = alpaca_entry(run_json(capsys, "show", runs[name], "--store", store))
        assert entry["metrics"]["lc_fit"] == "joint over 2 runs of this judge", name
        assert entry["pool_history"][-1]["runs"] == sorted([runs[name], runs[partner]])
    # The baseline's identity separates pools; how its spec was written does not.
    from evalharness.pool_history import pool_key

    key = ("alpaca_eval", "judge", "data")
    assert pool_key(*key, {"model": "h1", "spec": "a"}, {}) == pool_key(
        *key, {"model": "h1", "spec": "b"}, {}
    )
    assert pool_key(*key, {"model": "h1"}, {}) != pool_key(*key, {"model": "h2"}, {})
    assert pool_key(*key, None, {}) != pool_key(*key, {"run": "r1"}, {})


def test_a_refit_of_a_stored_run_is_recorded_and_reproducible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evalharness.tasks.alpaca_eval.task import AlpacaEval

    imports = {}
    for name, extra in (("a", 30), ("b", 100), ("c", 60)):
        imports[name] = lengthy_model(tmp_path, name, extra)
    alone = import_run(capsys, imports["a"][0], "--annotations", str(imports["a"][1]))
    a = alone["run_id"]
    own = alpaca_entry(alone)["metrics"]["length_controlled_winrate"]
    own_ci = alpaca_entry(alone)["ci"]["length_controlled_winrate"]
    assert own_ci[0] < own < own_ci[1]  # the single-run fit's bootstrap CI
    b = import_run(capsys, imports["b"][0], "--annotations", str(imports["b"][1]))["run_id"]
    after_b = lc_entry(capsys, a)
    history = after_b["pool_history"]
    assert [r["fit_id"] for r in history][0] == "own" and len(history) == 2
    # What `show` said before the refit is kept, with the CI that went with it.
    assert history[0]["metrics"]["length_controlled_winrate"] == own
    assert history[0]["metrics"]["lc_fit"] == "single_run"
    assert history[0]["ci"]["length_controlled_winrate"] == own_ci
    joint = history[1]
    assert joint["n_runs"] == 2 and joint["runs"] == sorted([a, b])
    assert len(joint["fit_id"]) == 12 and joint["date"].endswith("+00:00")
    shown = after_b["metrics"]["length_controlled_winrate"]
    assert shown == joint["metrics"]["length_controlled_winrate"] != own
    assert after_b["metrics"]["pool_fit_id"] == joint["fit_id"]
    assert after_b["metrics"]["pool_fit_date"] == joint["date"]
    low, high = after_b["ci"]["length_controlled_winrate"]
    assert low < shown < high and [low, high] == joint["ci"]["length_controlled_winrate"]

    import_run(capsys, imports["c"][0], "--annotations", str(imports["c"][1]))
    after_c = lc_entry(capsys, a)
    assert after_c["pool_history"][:2] == history
    assert after_c["pool_history"][2]["n_runs"] == 3
    assert after_c["pool_history"][2]["fit_id"] != joint["fit_id"]
    # Re-running a's own command refits the same members: nothing new to record.
    import_run(capsys, imports["a"][0], "--annotations", str(imports["a"][1]))
    assert lc_entry(capsys, a) == after_c
    # The number `show` prints is reproducible from the runs its record names.
    store = RunStore(tmp_path / "store.sqlite")
    members = after_c["pool_history"][-1]["runs"]
    scores = {
        run: [(s["sample_id"], s["scores"]) for s in store.get_samples(run, "alpaca_eval")]
        for run in members
    }
    store.close()
    again = AlpacaEval({}).pooled_metrics(scores)[a]
    assert again.metrics["length_controlled_winrate"] == pytest.approx(
        after_c["metrics"]["length_controlled_winrate"], abs=1e-9
    )
    assert list(again.ci["length_controlled_winrate"]) == pytest.approx(
        after_c["ci"]["length_controlled_winrate"], abs=1e-9
    )
