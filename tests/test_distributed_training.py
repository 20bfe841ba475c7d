"""`evalharness train` launched as two processes (`accelerate launch` over gloo on CPUs: DDP and
FSDP2), and the shipped accelerate config files.

Two processes with a per-process batch of B must train what one process does with a batch of 2B:
the same rows per optimizer step (accelerate deals batch 2k to process 0 and 2k+1 to process 1
from the one seeded shuffle), the same per-step losses and the same final weights, within
`LOSS_RTOL` and `WEIGHT_ATOL` (measured: losses within 5e-7 relative, weights within 3e-6
absolute after 3 AdamW steps at lr 1e-3 that move them by up to 2e-3). The 2-process run also
shards the data, reports metrics over both processes and leaves exactly one checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, free_port, run_cli, write_lines
from tiny_models import phrase

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
ROWS = 24
BATCH = 4  # per process; the one-process run takes 2 x BATCH
#: Per-step loss, relative; float32 with gloo's reduction order and different padding.
LOSS_RTOL = 1e-5
#: Final weights, absolute (and relative to each weight, torch.testing.assert_close).
WEIGHT_ATOL = 1e-5


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


def preference_rows() -> list[dict[str, str]]:
    rng = random.Random(0)
    return [
        {"prompt": phrase(rng), "chosen": " good water", "rejected": " bad cat dog"}
        for _ in range(ROWS)
    ]


def sft_rows() -> list[dict[str, str]]:
    """Completions of 1 to 9 words: the two processes' batches hold different token counts, so
    a mean of per-process token means is not the mean over the global batch's tokens."""
    rng = random.Random(1)
    return [
        {"prompt": phrase(rng), "completion": " " + phrase(rng, rng.randint(1, 9))}
        for _ in range(ROWS)
    ]


def train_command(method: str, model: Path, data: Path, out: Path, batch: int) -> list[str]:
    return [
        "-m", "evalharness", "train", "--method", method, "--model", f"hf:{model}",
        "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", str(batch),
        "--lr", "1e-3", "--quiet", "--json",
    ]  # fmt: skip


def train_env(cache: Path) -> dict[str, str]:
    env = cli_env(
        OMP_NUM_THREADS="1",
        EVALHARNESS_CACHE=str(cache),
        CUDA_VISIBLE_DEVICES="",  # CPU processes over gloo even where GPUs exist
    )
    env.pop("WORLD_SIZE", None)
    return env


def one_process(method: str, model: Path, data: Path, out: Path) -> dict[str, Any]:
    """The baseline: one process, a batch of 2 x BATCH, on the CPU like the launched ones."""
    command = [sys.executable, *train_command(method, model, data, out, 2 * BATCH)]
    done = subprocess.run(
        command, env=train_env(out.parent / "cache"), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def two_processes(config: Path, method: str, model: Path, data: Path, out: Path) -> dict[str, Any]:
    """`accelerate launch` of 2 processes, a batch of BATCH each; the main one's summary."""
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate)] if accelerate.exists() else [sys.executable, "-m", "accelerate"]
    command = [
        *launcher, "launch", "--config_file", str(config), "--num_processes", "2",
        "--main_process_port", str(free_port()),
        *train_command(method, model, data, out, BATCH),
    ]  # fmt: skip
    env = train_env(out.parent / "cache")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    # Only the main process prints the summary.
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1
    return summaries[0]


def step_losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def assert_same_training(one: Path, two: Path, start: Path) -> None:
    """Same per-step losses and final weights, and the weights moved far beyond the tolerance."""
    import torch
    from safetensors.torch import load_file

    assert step_losses(two) == pytest.approx(step_losses(one), rel=LOSS_RTOL)
    alone, together = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert sorted(together) == sorted(alone)
    for key, weight in alone.items():
        torch.testing.assert_close(together[key], weight, rtol=WEIGHT_ATOL, atol=WEIGHT_ATOL)
    initial = load_file(start / "model.safetensors")
    moved = max(float((alone[k] - initial[k]).abs().max()) for k in alone)
    assert moved > 100 * WEIGHT_ATOL


@pytest.mark.skipif(not gloo_available(), reason="accelerate / torch.distributed gloo missing")
def test_two_process_dpo_trains_as_one_process_shards_the_data_and_writes_one_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = preference_rows()
    data = write_lines(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "out"
    summary = two_processes(CONFIGS / "multi_gpu.yaml", "dpo", tiny_model_dir, data, out)
    one_process("dpo", tiny_model_dir, data, tmp_path / "alone")
    assert_same_training(tmp_path / "alone", out, tiny_model_dir)

    # One epoch of 24 rows in batches of 4 is 6 batches: 3 per process, so 3 optimizer steps
    # (one process alone would take 6), and both processes' examples are counted.
    assert summary["steps"] == ROWS // BATCH // 2
    assert summary["examples"] == ROWS
    metadata = json.loads((out / "train.json").read_text())
    assert metadata["processes"] == 2
    assert metadata["distributed_type"] == "MULTI_CPU"
    assert metadata["steps"] == summary["steps"]

    # Exactly one writer: one record per step in the log, nothing duplicated.
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["examples"] for r in records if "loss" in r] == [8, 16, 24]
    assert records[-1]["lr"] == pytest.approx(0.0)  # the schedule ends on the last step
    assert not list(out.glob("*.tmp")) and not list(out.glob("step-*"))
    cached = list((tmp_path / "cache" / "reference_logps").glob("*"))
    assert cached and all(p.suffix == ".safetensors" for p in cached)

    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    assert os.path.getsize(out / "model.safetensors") > 0


@pytest.fixture(scope="module")
def sft_alone(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The SFT data and the one-process checkpoint trained on it (shared by DDP and FSDP2)."""
    directory = tmp_path_factory.mktemp("sft-alone")
    data = write_lines(directory / "sft.jsonl", [json.dumps(r) for r in sft_rows()])
    one_process("sft", tiny_model_dir, data, directory / "alone")
    return data, directory / "alone"


def fsdp2_cpu_config(path: Path) -> Path:
    """configs/accelerate/fsdp.yaml with float32 compute (no bf16 autocast: equality is checked
    in float32); the process count comes from the command line."""
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((CONFIGS / "fsdp.yaml").read_text())
    config["mixed_precision"] = "no"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.skipif(not gloo_available(), reason="accelerate / torch.distributed gloo missing")
@pytest.mark.parametrize("sharding", ["ddp", "fsdp2"])
def test_two_process_sft_trains_as_one_process(
    sharding: str, sft_alone: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """SFT's loss is a mean over the batch's tokens: over both processes' tokens, not a mean of
    the two processes' token means. FSDP2 also shards the weights, clips the sharded gradients
    and gathers the full weights (tied embeddings once) for the checkpoint."""
    data, alone = sft_alone
    config = CONFIGS / "multi_gpu.yaml"
    if sharding == "fsdp2":
        config = fsdp2_cpu_config(tmp_path / "fsdp2.yaml")
    out = tmp_path / "out"
    two_processes(config, "sft", tiny_model_dir, data, out)
    assert_same_training(alone, out, tiny_model_dir)
    metadata = json.loads((out / "train.json").read_text())
    assert metadata["distributed_type"] == {"ddp": "MULTI_CPU", "fsdp2": "FSDP"}[sharding]


@pytest.mark.parametrize(
    ("launch", "message"),
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed ZeRO needs GPUs"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "only as FSDP2"),
    ],
)
def test_cpu_launch_of_what_needs_gpus_fails_in_one_line(
    launch: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """accelerate would quietly turn these into DDP on CPUs; the run stops before loading."""
    from evalharness.trainers.distributed import cpu_only_launch

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in launch.items():
        monkeypatch.setenv(name, value)
    if not cpu_only_launch():
        pytest.skip("this machine has an accelerator: the launch is not CPU-only")
    data = write_lines(tmp_path / "pairs.jsonl", [json.dumps(preference_rows()[0])])
    code, _, err = run_cli(
        capsys, "train", "--method", "dpo", "--model", "hf:missing-model", "--data", str(data),
        "--out", str(tmp_path / "out"), "--quiet",
    )  # fmt: skip
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
