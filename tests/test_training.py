"""The built-in trainer end to end on a tiny local model: every method, real data, LoRA, gates."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli, tiny_run_args, write_lines
from conftest import shared_data
from tiny_models import phrase
from train_configs import train_args, train_config

from evalharness.engine.training import ONLINE_LOOPS
from evalharness.trainers import losses
from evalharness.trainers.config import LoraSettings, TrainConfig
from evalharness.trainers.loop import Trainer, train


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    return write_lines(path, [json.dumps(row) for row in rows])


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small authored data in every format (seeded), each with a learnable pattern."""
    directory = tmp_path_factory.mktemp("train-data")
    rng = random.Random(0)
    sft = [{"prompt": p, "completion": f" {p.split()[0]} {p.split()[0]}"} for p in
           (phrase(rng) for _ in range(48))]  # fmt: skip
    pairs = [
        {"prompt": phrase(rng), "chosen": " good water", "rejected": " bad cat dog"}
        for _ in range(32)
    ]
    binary = [
        {
            "prompt": phrase(rng),
            "completion": " good water" if i % 2 else " bad cat",
            "label": i % 2 == 1,
        }
        for i in range(32)
    ]
    ranking = [
        {
            "prompt": phrase(rng),
            "completions": [" good water", " cat", " bad dog runs"],
            "rewards": [1.0, 0.5, 0.0],
        }
        for _ in range(24)
    ]
    prompts = [{"prompt": phrase(rng)} for _ in range(8)]
    return {
        "sft": write_jsonl(directory / "sft.jsonl", sft),
        "pairwise": write_jsonl(directory / "pairs.jsonl", pairs),
        "binary": write_jsonl(directory / "binary.jsonl", binary),
        "ranking": write_jsonl(directory / "ranking.jsonl", ranking),
        "prompt": write_jsonl(directory / "prompts.jsonl", prompts),
    }


def weights_differ(model_a: Path, model_b: Path) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(model_a / "model.safetensors"), load_file(model_b / "model.safetensors")
    return any(not torch.equal(a[k], b[k]) for k in a if k in b)


OFFLINE = [m.name for m in losses.methods() if m.name not in ONLINE_LOOPS]


def test_every_method_is_registered_with_its_data_format() -> None:
    names = {m.name for m in losses.methods()}
    expected = set(
        [
            "dpo",
            "robust",
            "hinge",
            "ipo",
            "exo_pair",
            "nca_pair",
            "bco_pair",
            "sppo_hard",
            "aot",
            "aot_unpaired",
            "apo_zero",
            "apo_down",
            "discopop",
            "sigmoid_norm",
            "mixture",
            "cpo",
            "simpo",
            "orpo",
            "kto",
            "bco",
            "rrhf",
            "pro",
            "aft",
            "asft_anchored",
            "asft_aligned",
            "poft",
            "dft",
            "sft",
            "reward",
            "grpo",
            "rloo",
            "ppo",
            "online_dpo",
            "xpo",
            "nash_md",
            "gkd",
        ]
    )
    assert names == expected
    assert losses.method("kto").data_format == "binary"
    assert losses.method("grpo").data_format == "prompt"
    assert losses.get("dpo") is losses.method("dpo").loss


@pytest.mark.parametrize("name", OFFLINE)
def test_each_method_trains_and_writes_a_loadable_checkpoint(
    name: str, tiny_model_dir: Path, data_files: dict[str, Path], tmp_path: Path
) -> None:
    method = losses.method(name)
    out = tmp_path / "out"
    summary = train(
        train_config(
            name,
            tiny_model_dir,
            data_files[method.data_format],
            out,
            max_steps=2,
            batch_size=4,
            learning_rate=1e-3,
            limit=12,
            eval_fraction=0.25,
        ),
        progress=False,
    )
    assert summary.steps == 2
    assert torch.isfinite(torch.tensor(summary.final["loss"]))
    assert (out / "model.safetensors").exists() and (out / "train.json").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert "eval/loss" in summary.eval_after
    if name != "reward":  # the reward model's head is new, so there is nothing to compare
        assert weights_differ(tiny_model_dir, out)


def test_sft_lowers_heldout_loss_and_the_checkpoint_runs(
    tiny_model_dir: Path,
    data_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "sft"
    code, stdout, _ = run_cli(
        capsys, *train_args("sft", tiny_model_dir, data_files["sft"], out), "--lr", "1e-3",
        "--max-steps", "15", "--batch-size", "8", "--eval-fraction", "0.25", "--quiet", "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(stdout)
    assert result["eval_after"]["eval/loss"] < result["eval_before"]["eval/loss"] - 0.3
    code, _, _ = run_cli(capsys, *tiny_run_args(out, tmp_path / "store.sqlite", "--json"))
    assert code == 0


def test_lora_run_merges_into_a_checkpoint_the_harness_evaluates(
    tiny_model_dir: Path,
    data_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "lora-dpo"
    summary = train(
        train_config(
            "dpo",
            tiny_model_dir,
            data_files["pairwise"],
            out,
            max_steps=6,
            batch_size=4,
            learning_rate=5e-3,
            eval_fraction=0.25,
            lora=LoraSettings(rank=4, alpha=8),
        ),
        progress=False,
    )
    # The reference is the base with adapters disabled: before training the margin is 0.
    assert summary.eval_before["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    assert summary.eval_after["eval/rewards/margin"] > 0
    assert (out / "adapter" / "adapter_config.json").exists()
    assert weights_differ(tiny_model_dir, out)
    code, _, _ = run_cli(capsys, *tiny_run_args(out, tmp_path / "store.sqlite", "--json"))
    assert code == 0


def test_a_trainer_run_earlier_in_the_process_does_not_set_our_precision(
    tiny_model_dir: Path, data_files: dict[str, Path], tmp_path: Path
) -> None:
    """accelerate keeps one state per process: a bf16 trainer before (TRL's SFTConfig turns
    bf16 on) must not make this loop score policy and reference under different autocast."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)  # whatever earlier tests left
    Accelerator(mixed_precision="bf16", cpu=True)  # what an earlier TRL run leaves behind
    try:
        summary = train(
            train_config(
                "dpo",
                tiny_model_dir,
                data_files["pairwise"],
                tmp_path / "dpo",
                max_steps=1,
                batch_size=4,
                eval_fraction=0.25,
                lora=LoraSettings(rank=4, alpha=8),
            ),
            progress=False,
        )
        assert AcceleratorState().mixed_precision == "no"
    finally:
        AcceleratorState._reset_state(reset_partial_state=False)
    assert summary.eval_before["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-6)


def test_dpo_on_real_preferences_generalises(tiny_model_dir: Path, tmp_path: Path) -> None:
    """HH-RLHF (harmless): held-out implicit-reward accuracy above chance, margin above 0."""
    rows = [
        json.loads(line)
        for line in shared_data("hh_rlhf/harmless_base_test_first2000.jsonl")
        .read_text()
        .splitlines()[:384]
    ]
    train_file = write_jsonl(tmp_path / "train.jsonl", rows[:256])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows[256:])
    summary = train(
        train_config(
            "dpo",
            tiny_model_dir,
            train_file,
            tmp_path / "dpo",
            eval_data=str(eval_file),
            epochs=2,
            batch_size=8,
            learning_rate=5e-4,
            max_length=192,
            max_prompt_length=128,
        ),
        progress=False,
    )
    before, after = summary.eval_before, summary.eval_after
    assert before["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-6)  # policy = reference
    assert after["eval/rewards/accuracy"] > 0.55
    assert after["eval/rewards/margin"] > 0.05
    assert after["eval/loss"] < before["eval/loss"]


def test_reference_log_probs_are_computed_once_and_cached(
    tiny_model_dir: Path,
    data_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVALHARNESS_CACHE", str(tmp_path / "cache"))
    config = train_config(
        "dpo", tiny_model_dir, data_files["pairwise"], tmp_path / "a", max_steps=1, batch_size=4
    )
    first = Trainer(config, progress=False)
    assert len(list((tmp_path / "cache" / "reference_logps").glob("*.safetensors"))) == 1
    from evalharness.trainers import models

    def no_reference_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reference was scored again")

    monkeypatch.setattr(models.PolicyScorer, "forward", no_reference_pass)
    second = Trainer(config, progress=False)
    assert torch.equal(first.reference["train"]["chosen"], second.reference["train"]["chosen"])
    # A different batch size or data changes the fingerprint: computed afresh, not reused.
    monkeypatch.undo()
    monkeypatch.setenv("EVALHARNESS_CACHE", str(tmp_path / "cache"))
    Trainer(TrainConfig(**{**config.to_dict(), "limit": 8, "lora": None}), progress=False)
    assert len(list((tmp_path / "cache" / "reference_logps").glob("*.safetensors"))) == 2


def test_grpo_with_a_reward_model(
    tiny_model_dir: Path, data_files: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from tiny_models import build_tiny_reward_model

    reward_model = build_tiny_reward_model(tmp_path / "rm")
    out = tmp_path / "grpo"
    code, stdout, _ = run_cli(
        capsys, *train_args("grpo", tiny_model_dir, data_files["prompt"], out),
        "--reward", f"rm:{reward_model}",
        "--group-size", "3", "--max-new-tokens", "6", "--batch-size", "2", "--max-steps", "2",
        "--lr", "1e-4", "--quiet", "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(stdout)
    assert result["steps"] == 2 and "reward/mean" in result["final"]
    assert weights_differ(tiny_model_dir, out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "dpoo"], "unknown method 'dpoo'"),
        (["--method", "dpo", "--loss-arg", "gamma=1"], "has no hyperparameter gamma"),
        (["--method", "dpo", "--loss-arg", "beta"], "--loss-arg expects NAME=VALUE"),
        pytest.param(
            ["--method", "dpo", "--qlora"],
            "QLoRA (lora.load_in_4bit) needs a CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU can run QLoRA"),
        ),
    ],
)
def test_bad_training_requests_are_one_line_errors(
    argv: list[str],
    message: str,
    tiny_model_dir: Path,
    data_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_cli(
        capsys, "train", "--model", f"hf:{tiny_model_dir}", "--data", str(data_files["pairwise"]),
        "--out", str(tmp_path / "o"), "--quiet", *argv,
    )  # fmt: skip
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_malformed_training_data_names_file_and_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_lines(
        tmp_path / "bad.jsonl",
        ['{"prompt": "a", "chosen": " b", "rejected": " c"}', '{"prompt": "a", "chosen": " b"}'],
    )
    code, _, err = run_cli(
        capsys, *train_args("dpo", tiny_model_dir, bad, tmp_path / "o"), "--quiet"
    )
    assert code == 2
    assert f"{bad}:2" in err and "rejected" in err


def test_methods_lists_every_method_with_its_data(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run_cli(capsys, "methods", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(stdout) if not row["tuning_free"]}
    assert len(rows) >= 31
    assert rows["kto"]["data"] == "binary" and rows["kto"]["reference"] is True
    assert rows["grpo"]["kind"] == "online" and rows["kto"]["kind"] == "offline"
    assert rows["simpo"]["hyperparameters"]["gamma"] is not None


@pytest.mark.parametrize(("max_drop", "expected_code"), [(100.0, 0), (-100.0, 1)])
def test_pipeline_gates_on_a_regression(
    max_drop: float,
    expected_code: int,
    tiny_model_dir: Path,
    data_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    config = {
        "train": {
            "method": "sft",
            "model": f"hf:{tiny_model_dir}",
            "data": str(data_files["sft"]),
            "out": str(tmp_path / "tuned"),
            "max_steps": 2,
            "batch_size": 4,
            "learning_rate": 1e-3,
        },
        "evaluate": {
            "tasks": ["driftcaps"],
            "limit": 4,
            "task_args": {"driftcaps.max_new_tokens": 8},
            "store": str(tmp_path / "store.sqlite"),
        },
        "gate": [{"metric": "driftcaps.balanced_safety_accuracy", "max_drop": max_drop}],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    code, stdout, _ = run_cli(capsys, "pipeline", str(path), "--json", "--quiet")
    assert code == expected_code
    report = json.loads(stdout)
    assert report["passed"] is (expected_code == 0)
    assert report["gates"][0]["metric"] == "driftcaps.balanced_safety_accuracy"
    assert report["base_run"] != report["tuned_run"]


def test_packed_sft_trains_on_fewer_rows(
    tiny_model_dir: Path, data_files: dict[str, Path], tmp_path: Path
) -> None:
    config = train_config(
        "sft",
        tiny_model_dir,
        data_files["sft"],
        tmp_path / "packed",
        max_steps=2,
        batch_size=2,
        max_length=64,
        learning_rate=1e-3,
        pack=True,
    )
    trainer = Trainer(config, progress=False)
    rows = trainer.train_data.examples
    assert len(rows) < 48 and all(len(row.input_ids) <= 64 for row in rows)
    batch = trainer.train_data.batch([0, 1])
    assert "position_ids" in batch and int((batch["position_ids"] == 0).sum()) > 2
    summary = trainer.run()
    assert torch.isfinite(torch.tensor(summary.final["loss"]))
