"""Where training computes and in what precision (`trainers.precision`), on the CPU.

The choice a GPU machine would make is checked with CUDA simulated and the calls into
accelerate and transformers captured; real tiny-model runs show that the default CPU run
computes what it always did and that the 16-bit options run on the CPU.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import run_cli, write_lines
from tiny_models import phrase
from train_configs import train_args, train_config

from evalharness.errors import InputError
from evalharness.trainers import loop, models, online, online_run, precision
from evalharness.trainers.config import TrainConfig


class Stop(Exception):
    """Raised by a captured call: the test has seen what it needed."""


def _pretend_cuda(monkeypatch: pytest.MonkeyPatch, bf16: bool = True) -> list[int]:
    """CUDA visible (2 devices); returns the list `torch.cuda.set_device` calls go to."""
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    return chosen


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("devices-data")
    rng = random.Random(0)
    sft = [{"prompt": (p := phrase(rng)), "completion": f" {p.split()[0]}"} for _ in range(16)]
    pairs = [
        {"prompt": phrase(rng), "chosen": " good water", "rejected": " bad cat dog"}
        for _ in range(16)
    ]
    return {
        "sft": write_lines(directory / "sft.jsonl", [json.dumps(r) for r in sft]),
        "pairwise": write_lines(directory / "pairs.jsonl", [json.dumps(r) for r in pairs]),
    }


def _config(model: Path, data: Path, out: Path, method: str = "dpo", **extra: Any) -> TrainConfig:
    settings = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "eval_fraction": 0.25}
    settings.update(extra)
    return train_config(method, model, data, out, **settings)


def _losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [record.get("loss", record.get("eval/loss")) for record in map(json.loads, lines)]


# -- the choice on a GPU machine (simulated) -------------------------------------------------
def test_a_gpu_run_defaults_to_bf16_autocast_as_trl_and_cpu_forces_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _pretend_cuda(monkeypatch)
    assert precision.plan("auto", "auto", "auto") == precision.Placement(False, "bf16")
    assert precision.plan("cuda", "no", "auto") == precision.Placement(False, "no")
    assert precision.plan("cpu", "auto", "auto") == precision.Placement(True, "no")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # `accelerate launch`'s choice
    assert precision.plan("auto", "auto", "auto").mixed_precision == "fp16"


def test_no_bf16_autocast_without_bf16_or_over_float16_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _pretend_cuda(monkeypatch, bf16=False)
    assert precision.plan("auto", "auto", "auto").mixed_precision == "no"
    _pretend_cuda(monkeypatch)
    assert precision.plan("auto", "auto", "float16").mixed_precision == "no"
    with pytest.raises(InputError, match="mixed_precision fp16 needs float32 weights"):
        precision.plan("auto", "fp16", "float16")


def test_a_numbered_gpu_becomes_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _pretend_cuda(monkeypatch)
    precision.plan("cuda:1", "auto", "auto")
    assert chosen == [1]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="each process uses its own GPU"):
        precision.plan("cuda:1", "auto", "auto")


def test_missing_devices_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="device cuda: no CUDA device is visible"):
        precision.plan("cuda", "auto", "auto")


def test_the_trainer_hands_accelerate_the_placement(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """What the loop gives `Accelerator` on a GPU machine: by default the GPU with bf16
    autocast; with `device: cpu` the host (`cpu=True`) without it."""
    _pretend_cuda(monkeypatch)
    seen: list[dict[str, Any]] = []

    def capture(**options: Any) -> None:
        seen.append(options)
        raise Stop

    monkeypatch.setattr(loop, "fresh_accelerator", capture)
    monkeypatch.setattr(online_run, "fresh_accelerator", capture)
    for device in ("auto", "cpu"):
        config = _config(tiny_model_dir, data["pairwise"], tmp_path / "out", device=device)
        with pytest.raises(Stop):
            loop.Trainer(config, progress=False)
    grpo = _config(tiny_model_dir, data["sft"], tmp_path / "g", method="grpo", reward="rm:x")
    with pytest.raises(Stop):
        online.train_online(grpo, progress=False)
    assert [(s["cpu"], s["mixed_precision"]) for s in seen] == [
        (False, "bf16"),
        (True, "no"),
        (False, "bf16"),
    ]


def test_dtype_auto_is_the_checkpoints_on_the_gpu_and_float32_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`load_model` resolves `auto` by the shared rule before transformers loads anything."""
    import shutil

    checkpoint = tmp_path / "bf16-checkpoint"
    shutil.copytree(tiny_model_dir, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (checkpoint / "config.json").write_text(json.dumps(config))
    loaded: list[str] = []

    class Model:
        def to(self, device: Any) -> Model:
            return self

    class Tokenizer:
        pad_token_id = 0

    def load_pretrained(spec: Any, directory: Path, model_class: Any) -> tuple[Any, Any]:
        loaded.append(spec.dtype)
        return Tokenizer(), Model()

    monkeypatch.setattr(models, "load_pretrained", load_pretrained)
    on_gpu = models.load_model(f"hf:{checkpoint}", "auto", device=torch.device("cuda", 0))
    on_cpu = models.load_model(f"hf:{checkpoint}", "auto", device=torch.device("cpu"))
    asked = models.load_model(f"hf:{checkpoint}", "float16", device=torch.device("cuda", 0))
    assert loaded == ["bfloat16", "float32", "float16"]
    assert [m.identity["dtype"] for m in (on_gpu, on_cpu, asked)] == loaded
    # A PEFT adapter directory declares no dtype: its base model's config.json does.
    from safetensors.torch import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(checkpoint), "peft_type": "LORA"})
    )
    save_file({"a": torch.zeros(1)}, str(adapter / "adapter_model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(checkpoint / name, adapter / name)
    models.load_model(f"hf:{adapter}", "auto", device=torch.device("cuda", 0))
    assert loaded[-1] == "bfloat16"


def test_tf32_goes_on_for_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("PyTorch before 2.9 has the legacy allow_tf32 flags only")
    before = (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    try:
        assert precision.use_tf32(torch.device("cpu"), True) is False
        assert matmul.fp32_precision == before[0]
        assert precision.use_tf32(torch.device("cuda", 0), False) is False
        assert precision.use_tf32(torch.device("cuda", 0), True) is True
        assert matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert torch.backends.mkldnn.matmul.fp32_precision != "tf32"  # the CPU's stay IEEE
    finally:
        matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


# -- settings: flags, YAML, one-line errors --------------------------------------------------
def test_flags_and_yaml_set_the_placement(tmp_path: Path) -> None:
    from evalharness.cli import build_parser
    from evalharness.cli.train import config_from_args

    base = ["train", "--method", "sft", "--model", "hf:m", "--data", "d.jsonl", "--out", "o"]
    default = config_from_args(build_parser().parse_args(base))
    assert (default.dtype, default.device, default.mixed_precision, default.tf32) == (
        "auto",
        "auto",
        "auto",
        True,
    )
    flags = ["--device", "CPU", "--mixed-precision", "bf16", "--dtype", "bfloat16", "--no-tf32"]
    given = config_from_args(build_parser().parse_args(base + flags))
    assert (given.device, given.mixed_precision, given.dtype, given.tf32) == (
        "cpu",
        "bf16",
        "bfloat16",
        False,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mixed_precision: bf15", "train.yaml:5: field 'mixed_precision' must be one of auto"),
        ("device: gpu0", "train.yaml:5: field 'device' must be auto (first accelerator"),
        ("dtype: float64", "train.yaml:5: field 'dtype' must be one of auto, float32"),
        ("tf32: maybe", "train.yaml:5: field 'tf32' must be true or false, not 'maybe'"),
    ],
)
def test_bad_placement_settings_are_one_line_errors(
    line: str, message: str, tmp_path: Path
) -> None:
    from evalharness.cli import build_parser
    from evalharness.cli.train import config_from_args

    path = tmp_path / "train.yaml"
    path.write_text(f"method: sft\nmodel: hf:m\ndata: d.jsonl\nout: o\n{line}\n")
    with pytest.raises(InputError) as caught:
        config_from_args(build_parser().parse_args(["train", "--config", str(path)]))
    assert message in str(caught.value) and "\n" not in str(caught.value)


# -- real runs on the CPU --------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_the_default_cpu_run_is_the_float32_run_it_always_was(
    method: str, tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """dtype/mixed precision `auto` on the CPU: float32 without autocast, the same losses as
    a run that names them (which is what every run computed before `auto` existed)."""
    source = data["sft" if method == "sft" else "pairwise"]
    default = _config(tiny_model_dir, source, tmp_path / "default", method=method)
    named = _config(
        tiny_model_dir,
        source,
        tmp_path / "named",
        method=method,
        dtype="float32",
        mixed_precision="no",
        device="cpu",
    )
    loop.train(default, progress=False)
    loop.train(named, progress=False)
    assert _losses(tmp_path / "default") == pytest.approx(_losses(tmp_path / "named"), abs=1e-6)
    placement = json.loads((tmp_path / "default" / "train.json").read_text())["placement"]
    expected = {"device": "cpu", "dtype": "float32", "mixed_precision": "no", "tf32": False}
    assert placement == expected


@pytest.mark.parametrize(
    ("flags", "dtype", "mixed"),
    [
        (["--dtype", "bfloat16", "--mixed-precision", "no"], "bfloat16", "no"),
        (["--mixed-precision", "bf16"], "float32", "bf16"),
    ],
)
def test_16_bit_options_train_on_the_cpu(
    flags: list[str],
    dtype: str,
    mixed: str,
    tiny_model_dir: Path,
    data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """bf16 weights, or float32 weights under bf16 autocast: both train, and the reference
    (a separate model here) is scored under the policy's autocast, so before any step the
    policy's implicit reward margin is exactly the reference's: zero. Full fine-tuning of
    bf16 weights is warned about (small updates round away)."""
    from safetensors import safe_open

    caplog.set_level("WARNING", logger="evalharness.trainers.precision")

    out = tmp_path / "dpo"
    code, stdout, err = run_cli(
        capsys, *train_args("dpo", tiny_model_dir, data["pairwise"], out), "--max-steps", "2",
        "--batch-size", "4", "--lr", "1e-3", "--eval-fraction", "0.25", "--quiet", "--json",
        *flags,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert result["steps"] == 2 and torch.isfinite(torch.tensor(result["final"]["loss"]))
    assert result["eval_before"]["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    placement = json.loads((out / "train.json").read_text())["placement"]
    assert (placement["device"], placement["dtype"], placement["mixed_precision"]) == (
        "cpu",
        dtype,
        mixed,
    )
    with safe_open(str(out / "model.safetensors"), framework="pt") as weights:
        stored = {weights.get_slice(key).get_dtype() for key in weights.keys()}  # noqa: SIM118
    assert stored == {"BF16" if dtype == "bfloat16" else "F32"}
    warned = any("rounded away" in record.getMessage() for record in caplog.records)
    assert warned is (dtype == "bfloat16")


def _grpo_config(
    model: Path, data: dict[str, Path], tmp_path: Path, reward: Path, **options: Any
) -> Any:
    """One GRPO step on the SFT prompts with the tiny reward model: 2 samples of 4 tokens."""
    return _config(
        model,
        data["sft"],
        tmp_path / "grpo",
        method="grpo",
        reward=f"rm:{reward}",
        group_size=2,
        max_new_tokens=4,
        batch_size=2,
        max_steps=1,
        **options,
    )


def test_online_models_load_on_the_runs_device(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """GRPO: policy and reference are loaded for the accelerator's device, the reward model's
    spec names the run's device (its `auto` dtype resolved there), and the run records its
    placement."""
    from tiny_models import build_tiny_reward_model

    from evalharness.backends import spec as modelspec

    devices: list[Any] = []
    real_load = online_run.load_model

    def load_model(*args: Any, **kwargs: Any) -> Any:
        devices.append(kwargs.get("device"))
        return real_load(*args, **kwargs)

    specs: list[Any] = []
    real_parse = modelspec.parse_model_spec

    def parse(text: str, **options: Any) -> Any:
        specs.append(real_parse(text, **options))
        return specs[-1]

    monkeypatch.setattr(online_run, "load_model", load_model)
    monkeypatch.setattr(modelspec, "parse_model_spec", parse)
    reward = build_tiny_reward_model(tmp_path / "rm")
    # beta > 0: a separate reference model.
    config = _grpo_config(tiny_model_dir, data, tmp_path, reward, loss_args={"beta": 0.1})
    online.train_online(config, progress=False)
    assert devices == [torch.device("cpu"), torch.device("cpu")]  # policy, reference
    rm_specs = [spec for spec in specs if spec.backend == "rm"]
    assert [(spec.device, spec.dtype) for spec in rm_specs] == [("cpu", "auto")]
    # `auto` is resolved where the reward backend places the model: float32 on the CPU.
    from evalharness.backends.local_model import resolve_placement

    assert resolve_placement(rm_specs[0], reward).dtype == "float32"
    metadata = json.loads((tmp_path / "grpo" / "train.json").read_text())
    assert metadata["placement"]["device"] == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("ieee_float32_after")
def test_on_a_gpu_training_runs_there_under_bf16_autocast(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """The defaults on a GPU: the model on it (float32 checkpoint: float32 weights), bf16
    autocast, TF32; policy and reference agree before the first step; GRPO samples there."""
    from tiny_models import build_tiny_reward_model

    seen: list[torch.device] = []
    real_prepare = loop.Trainer._prepare_reference

    def prepare(self: Any, loaded: Any) -> None:
        seen.append(next(self.model.parameters()).device)
        real_prepare(self, loaded)

    monkeypatch.setattr(loop.Trainer, "_prepare_reference", prepare)
    summary = loop.train(
        _config(tiny_model_dir, data["pairwise"], tmp_path / "dpo"), progress=False
    )
    assert seen[0].type == "cuda"
    assert summary.eval_before["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    placement = json.loads((tmp_path / "dpo" / "train.json").read_text())["placement"]
    assert placement["device"].startswith("cuda") and placement["mixed_precision"] == "bf16"
    assert placement["dtype"] == "float32" and placement["tf32"] is True
    reward = build_tiny_reward_model(tmp_path / "rm")
    grpo = _grpo_config(tiny_model_dir, data, tmp_path, reward)
    online.train_online(grpo, progress=False)
    grpo_placement = json.loads((tmp_path / "grpo" / "train.json").read_text())["placement"]
    assert grpo_placement["device"].startswith("cuda")


def test_auto_keeps_fully_trained_weights_in_float32_and_an_adapters_base_in_its_own() -> None:
    """A full fine-tune in bf16 weights loses AdamW's small updates: `auto` keeps them float32
    (bf16 autocast gives the speed, as TRL's defaults); a frozen base under an adapter follows
    the shared rule (its checkpoint's dtype on an accelerator)."""
    assert precision.weights_dtype("auto", None) == "float32"
    assert precision.weights_dtype("auto", object()) == "auto"
    assert precision.weights_dtype("bfloat16", None) == "bfloat16"
