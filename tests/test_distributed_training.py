"""`evalharness train` launched as two processes (`accelerate launch`, DDP over gloo on CPUs), and
the shipped accelerate config files.

The 2-process run must shard the data (half the optimizer steps of one process for one epoch),
report metrics over both processes, and leave exactly one checkpoint that loads.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import cli_env, free_port, write_lines
from tiny_models import phrase

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
ROWS = 24
BATCH = 4


def gloo_available() -> bool:
    try:
        import accelerate  # noqa: F401
        import torch.distributed as dist
    except ImportError:
        return False
    return dist.is_available() and dist.is_gloo_available()


@pytest.mark.parametrize("name", ["multi_gpu", "fsdp", "deepspeed_zero3"])
def test_accelerate_configs_are_valid_for_the_installed_accelerate(name: str) -> None:
    yaml = pytest.importorskip("yaml")
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    from accelerate.commands.launch import launch_command_parser

    path = CONFIGS / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    # Unknown top-level keys raise here, as `accelerate launch --config_file` would.
    config = config_args.ClusterConfig.from_yaml_file(str(path))
    options = {o for action in launch_command_parser()._actions for o in action.option_strings}
    nested = {**(raw.get("fsdp_config") or {}), **(raw.get("deepspeed_config") or {})}
    unknown = [key for key in nested if f"--{key}" not in options]
    assert not unknown, f"{name}: keys accelerate launch does not know: {unknown}"
    expected = {"multi_gpu": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}[name]
    assert config.distributed_type.value == expected
    if name == "fsdp":
        assert str(raw["fsdp_config"]["fsdp_version"]) == "2"
        assert raw["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert raw["mixed_precision"] == "bf16"
    if name == "deepspeed_zero3":
        assert raw["deepspeed_config"]["zero_stage"] == 3
        assert raw["deepspeed_config"]["zero3_save_16bit_model"] is True


@pytest.mark.skipif(not gloo_available(), reason="accelerate / torch.distributed gloo missing")
def test_two_process_dpo_run_shards_the_data_and_writes_one_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(0)
    rows = [
        {
            "prompt": phrase(rng),
            "chosen": " good water",
            "rejected": " bad cat dog",
        }
        for _ in range(ROWS)
    ]
    data = write_lines(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "out"
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate)] if accelerate.exists() else [sys.executable, "-m", "accelerate"]
    command = [
        *launcher, "launch", "--config_file", str(CONFIGS / "multi_gpu.yaml"),
        "--num_processes", "2", "--main_process_port", str(free_port()),
        "-m", "evalharness", "train", "--method", "dpo", "--model", f"hf:{tiny_model_dir}",
        "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", str(BATCH),
        "--lr", "1e-3", "--quiet", "--json",
    ]  # fmt: skip
    env = cli_env(
        OMP_NUM_THREADS="1",
        EVALHARNESS_CACHE=str(tmp_path / "cache"),
        CUDA_VISIBLE_DEVICES="",  # CPU processes over gloo even where GPUs exist
    )
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]

    # Only the main process prints the summary.
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1
    summary = summaries[0]
    # One epoch of 24 rows in batches of 4 is 6 batches: 3 per process, so 3 optimizer steps
    # (one process alone would take 6), and both processes' examples are counted.
    assert summary["steps"] == ROWS // BATCH // 2
    assert summary["examples"] == ROWS
    metadata = json.loads((out / "train.json").read_text())
    assert metadata["processes"] == 2
    assert metadata["steps"] == summary["steps"]

    # Exactly one writer: one record per step in the log, nothing duplicated.
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["examples"] for r in records if "loss" in r] == [8, 16, 24]
    assert records[-1]["lr"] == pytest.approx(0.0)  # the schedule ends on the last step
    assert not list(out.glob("*.tmp")) and not list(out.glob("step-*"))
    cached = list((tmp_path / "cache" / "reference_logps").glob("*"))
    assert cached and all(p.suffix == ".safetensors" for p in cached)

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    start = load_file(tiny_model_dir / "model.safetensors")
    trained = model.state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start if k in trained)
    assert os.path.getsize(out / "model.safetensors") > 0
