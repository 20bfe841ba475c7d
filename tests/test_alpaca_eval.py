"""AlpacaEval-style task: importing outputs and annotations, judging existing outputs, the
length-controlled win rate of one model at a time (equal to alpaca-eval's, never touched by other
runs, and its named fallback without calibration), agreement between annotators."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_cli, run_json

from evalharness.store.run_store import RunStore
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
    # Not AlpacaEval's instructions: no calibration, the fallback under its own name, said once.
    assert metrics["lc_glm"] == "length_controlled_minimal"
    assert 0 < metrics["length_controlled_minimal_winrate"] < 100
    assert "length_controlled_winrate" not in metrics and "lc_standard_error" not in metrics
    assert shown["warnings"] == result["warnings"] and len(result["warnings"]) == 1
    assert (
        "no length_controlled_winrate: the instructions are not all from AlpacaEval"
        in (result["warnings"][0])
    )


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
    # Four judged instructions are too few for the minimal GLM's 5-fold CV: no LC number.
    assert not {"length_controlled_winrate", "length_controlled_minimal_winrate"} & set(
        entry["metrics"]
    )
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
# The length-controlled win rate: AlpacaEval's, one model at a time


def eval_set_references(n: int) -> list[dict[str, Any]]:
    """The first `n` instructions of AlpacaEval's set with its reference outputs, in its order."""
    from conftest import shared_data

    return reference_rows(shared_data("alpaca_eval/eval_set.jsonl"))[:n]


def judged_like_alpaca_eval(
    tmp_path: Path, name: str, references: list[dict[str, Any]], outputs: list[str], seed: int
) -> tuple[Path, Path]:
    """A model annotated by a length-biased judge, with one missing verdict and two draws."""
    rng = np.random.default_rng(seed)
    preferences: list[Any] = [
        1.0 + 1.0 / (1.0 + math.exp(-(0.4 - 1.3 * math.tanh((len(r["output"]) - len(o)) / 600)
                                      + rng.normal(0.0, 0.8))))
        for r, o in zip(references, outputs, strict=True)
    ]  # fmt: skip
    preferences[5], preferences[8], preferences[13] = None, 1.5, 0
    return make_model(tmp_path, name, references, outputs, preferences)


def stored_metrics_json(store: Path, run_id: str) -> str:
    import sqlite3

    with sqlite3.connect(store) as conn:
        (row,) = conn.execute(
            "SELECT metrics_json FROM run_tasks WHERE run_id = ? AND task = 'alpaca_eval'",
            (run_id,),
        ).fetchall()
    return row[0]


def test_a_models_lc_is_alpaca_evals_and_no_other_run_changes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alpaca_reference import alpaca_eval_lc, write_calibration

    references = eval_set_references(200)
    calibration = write_calibration(tmp_path / "df_gamed.csv")
    rng = np.random.default_rng(0)
    filler = " This point matters because it shapes the result."
    outputs = {
        "plain": [r["output"][: int(len(r["output"]) * rng.uniform(0.6, 1.0))] for r in references],
        "verbose": [r["output"] + filler * int(rng.integers(10, 40)) for r in references],
        "gamed": [r["output"][:40] for r in references],  # the adversarial short-output model
    }
    models = {
        name: judged_like_alpaca_eval(tmp_path, name, references, outs, seed)
        for seed, (name, outs) in enumerate(outputs.items())
    }
    # The baseline itself (AlpacaEval: generator_2 == generator_1): 50 exactly.
    models["reference_model"] = make_model(
        tmp_path, "reference_model", references, [r["output"] for r in references],
        [1.5] * len(references),
    )  # fmt: skip

    def imported(name: str, store: Path) -> dict[str, Any]:
        outputs_path, annotations = models[name]
        return import_run(
            capsys, outputs_path, "--annotations", str(annotations),
            "--calibration", str(calibration), "--store", str(store),
        )  # fmt: skip

    alone = imported("plain", tmp_path / "alone.sqlite")
    store = tmp_path / "shared.sqlite"
    results = {"plain": imported("plain", store)}
    before = stored_metrics_json(store, results["plain"]["run_id"])
    for name in ("verbose", "gamed", "reference_model"):
        results[name] = imported(name, store)
    # Imports of other models leave the stored run as it was, byte for byte, and its LC is the
    # one it gets in a store of its own.
    assert stored_metrics_json(store, results["plain"]["run_id"]) == before
    plain = results["plain"]["run_id"]
    shown = alpaca_entry(run_json(capsys, "show", plain, "--store", str(store)))
    assert shown["metrics"] == alpaca_entry(alone)["metrics"]
    assert shown["ci"] == alpaca_entry(alone)["ci"]
    # Each model's numbers are alpaca-eval's, on the annotations file as it was imported.
    for name, result in results.items():
        expected = alpaca_eval_lc(json.loads(models[name][1].read_text()), calibration)
        entry = alpaca_entry(result)
        metrics = entry["metrics"]
        assert metrics["lc_glm"] == "length_controlled_v1", name
        assert metrics["length_controlled_winrate"] == pytest.approx(
            expected["length_controlled_winrate"], abs=1e-9
        ), name
        assert metrics["lc_standard_error"] == pytest.approx(
            expected["lc_standard_error"], abs=1e-9
        ), name
        assert metrics["win_rate"] == pytest.approx(expected["win_rate"], abs=1e-9), name
        low, high = entry["ci"]["length_controlled_winrate"]
        assert low <= metrics["length_controlled_winrate"] <= high, name
        assert entry["ci_method"]["length_controlled_winrate"] == "bootstrap-refit", name
        assert entry["ci_method"]["win_rate"] == "bootstrap-percentile", name
        assert result["warnings"] == [], name
    baseline = alpaca_entry(results["reference_model"])["metrics"]
    assert baseline["length_controlled_winrate"] == 50.0 and baseline["lc_standard_error"] == 0.0
    settings = run_json(capsys, "show", results["gamed"]["run_id"], "--store", str(store))[
        "provenance"
    ]["tasks"]["alpaca_eval"]["settings"]
    assert settings["lc_calibration"]["source"] == str(calibration.resolve())
    assert settings["lc_calibration"]["rows"] == 2 * 805


def fill_hf_cache(cache: Path, calibration: Path) -> None:
    """Put `calibration` where huggingface_hub's cache keeps tatsu-lab/alpaca_eval's files."""
    repo = cache / "datasets--tatsu-lab--alpaca_eval"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "df_gamed.csv").write_bytes(calibration.read_bytes())


def test_without_calibration_the_fallback_is_named_warned_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants
    from alpaca_reference import alpaca_eval_lc, write_calibration

    cache = tmp_path / "hf-cache"  # empty, and the hub is offline (conftest)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    references = eval_set_references(120)
    outputs = [r["output"][: max(20, len(r["output"]) // 3)] for r in references]
    model_outputs, annotations = judged_like_alpaca_eval(tmp_path, "m", references, outputs, 4)
    args = ("import", "alpaca-eval", "--outputs", str(model_outputs))
    code, _, err = run_cli(capsys, *args, "--annotations", str(annotations))
    assert code == 0, err
    said = [line for line in err.splitlines() if "length_controlled" in line]
    assert len(said) == 1, err
    assert "no length_controlled_winrate: df_gamed.csv is not in the Hugging Face cache" in said[0]
    assert "alpaca_eval.calibration=PATH" in said[0]
    cold = run_json(capsys, "show", "latest")
    metrics = alpaca_entry(cold)["metrics"]
    assert "length_controlled_winrate" not in metrics and "lc_standard_error" not in metrics
    assert metrics["lc_glm"] == "length_controlled_minimal"
    calibration = write_calibration(tmp_path / "df_gamed.csv")  # alpaca-eval reads it even so
    rows = json.loads(annotations.read_text())
    minimal = alpaca_eval_lc(rows, calibration, "length_controlled_minimal")
    assert metrics["length_controlled_minimal_winrate"] == pytest.approx(
        minimal["length_controlled_winrate"], abs=1e-9
    )
    low, high = alpaca_entry(cold)["ci"]["length_controlled_minimal_winrate"]
    assert low <= metrics["length_controlled_minimal_winrate"] <= high
    settings = cold["provenance"]["tasks"]["alpaca_eval"]["settings"]
    assert settings["lc_glm"] == "length_controlled_minimal"
    assert "df_gamed.csv is not in the Hugging Face cache" in settings["lc_without_calibration"]
    assert cold["warnings"] == [said[0].strip()]

    # A warm cache works offline: the same import gets AlpacaEval's LC, as another run.
    fill_hf_cache(cache, calibration)
    warm = import_run(capsys, model_outputs, "--annotations", str(annotations))
    assert warm["run_id"] != cold["run_id"] and warm["warnings"] == []
    expected = alpaca_eval_lc(rows, calibration)
    assert alpaca_entry(warm)["metrics"]["length_controlled_winrate"] == pytest.approx(
        expected["length_controlled_winrate"], abs=1e-9
    )
    shown = run_json(capsys, "show", warm["run_id"])
    source = shown["provenance"]["tasks"]["alpaca_eval"]["settings"]["lc_calibration"]["source"]
    assert source == "hub:tatsu-lab/alpaca_eval/df_gamed.csv"
    assert alpaca_entry(run_json(capsys, "show", cold["run_id"]))["metrics"] == metrics


def test_the_difficulty_option_is_replaced_by_the_calibration_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_outputs, annotations = annotated_model(tmp_path, [2.0] * 12)
    args = ("import", "alpaca-eval", "--outputs", str(model_outputs))
    code, _, err = run_cli(capsys, *args, "--annotations", str(annotations), "--difficulty", "x")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "alpaca_eval.difficulty is no longer an option" in err and "calibration" in err
    absent = tmp_path / "absent.csv"
    code, _, err = run_cli(capsys, *args, "--annotations", str(annotations), "--calibration",
                           str(absent))  # fmt: skip
    assert code == 2 and f"--calibration: {absent}: no such file" in err


def test_a_store_written_with_pooled_fits_still_shows_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stores from before per-model LC carry `pool`, `pool_history` and `lc_fit`: still read."""
    model_outputs, annotations = annotated_model(tmp_path, [2.0] * 6 + [1.0] * 6)
    run_id = import_run(capsys, model_outputs, "--annotations", str(annotations))["run_id"]
    store = RunStore(tmp_path / "store.sqlite")
    (task,) = store.get_tasks(run_id)
    entry = dict(task["metrics"])
    record = {"date": "2025-01-01T00:00:00+00:00", "ci": {"length_controlled_winrate": [40, 55]}}
    entry["metrics"] = {
        **entry["metrics"],
        "length_controlled_winrate": 47.5,
        "lc_fit": "joint over 2 runs of this judge",
        "lc_variant": "minimal",
        "lc_length_coef": -0.4,
        "pool_fit_id": "abcdef012345",
        "pool_fit_date": record["date"],
    }
    entry["ci"] = {**entry["ci"], "length_controlled_winrate": [40.0, 55.0]}
    entry["pool_history"] = [
        {**record, "fit_id": "own", "n_runs": 1, "runs": [run_id],
         "metrics": {"length_controlled_winrate": 49.0, "lc_fit": "single_run"}},
        {**record, "fit_id": "abcdef012345", "n_runs": 2, "runs": [run_id, "0" * 12],
         "metrics": {"length_controlled_winrate": 47.5, "lc_fit": "joint over 2 runs"}},
    ]  # fmt: skip
    store.put_task(run_id, "alpaca_eval", task["n"], {**task["info"], "pool": "ab" * 32})
    store.put_task_metrics(run_id, "alpaca_eval", entry, entry["failures"])
    store.close()
    shown = alpaca_entry(run_json(capsys, "show", run_id))
    assert shown["metrics"]["length_controlled_winrate"] == 47.5 and shown["pool_history"]
    code, out, err = run_cli(capsys, "show", run_id)
    assert code == 0 and "47.5" in out, err
    code, _, err = run_cli(capsys, "report", "--out", str(tmp_path / "site"))
    assert code == 0, err
