"""Every PEFT adapter type trains, saves, merges and keeps the base as its reference.

For each `--peft` type on the tiny model: a few SFT steps, then the merged checkpoint (`hf:OUT`)
and the saved adapter on the original base must score exactly like the trained model in memory
(and generate the same greedy tokens), while the run's reference scores like the base.
"""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import phrase
from train_configs import train_config

from evalharness.trainers import adapters, checkpoint, loop
from evalharness.trainers.adapters import PEFT_TYPES
from evalharness.trainers.checkpoint import save_checkpoint
from evalharness.trainers.config import PeftSettings
from evalharness.trainers.models import adapters_disabled, load_model

#: Small shapes where a type's defaults are larger than the tiny model's layers.
TINY_ARGS: dict[str, dict[str, Any]] = {
    "adalora": {"init_r": 4, "target_r": 2},
    "vera": {"r": 8},
}


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("peft-data") / "sft.jsonl"
    rows = [{"prompt": p, "completion": f" {p.split()[0]} {p.split()[0]}"}
            for p in (phrase(rng) for _ in range(12))]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def logprobs(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)


def greedy(model: Any, ids: torch.Tensor) -> list[int]:
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    return out[0].tolist()


@pytest.mark.parametrize("peft_type", PEFT_TYPES)
def test_each_peft_type_trains_merges_and_keeps_the_base_as_reference(
    peft_type: str,
    tiny_model_dir: Path,
    sft_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / peft_type
    config = train_config(
        "sft",
        tiny_model_dir,
        sft_file,
        out,
        max_steps=3,
        batch_size=4,
        learning_rate=2e-2,
        peft=PeftSettings(peft_type, dict(TINY_ARGS.get(peft_type, {}))),
    )
    trainer = loop.Trainer(config, progress=False)
    ids = torch.tensor([trainer.train_data.examples[0].input_ids])
    base = load_model(f"hf:{tiny_model_dir}", "float32").model.eval()
    seen: dict[str, Any] = {}

    def save_after_scoring(model: Any, *args: Any, **kwargs: Any) -> Path:
        """The in-memory trained model and the run's reference, scored before the merge."""
        model.eval()
        seen["trained"], seen["generated"] = logprobs(model, ids), greedy(model, ids)
        reference, _ = trainer._reference_model(None)
        with adapters_disabled(model) if reference is model else nullcontext():
            seen["reference"] = logprobs(reference, ids)
        return save_checkpoint(model, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_after_scoring)
    trainer.run()

    base_logps = logprobs(base, ids)
    assert (seen["trained"] - base_logps).abs().max() > 1e-3  # the adapter did train
    torch.testing.assert_close(seen["reference"], base_logps, atol=1e-4, rtol=0)
    merged = load_model(f"hf:{out}", "float32").model.eval()
    torch.testing.assert_close(logprobs(merged, ids), seen["trained"], atol=1e-4, rtol=0)
    assert greedy(merged, ids) == seen["generated"]
    from peft import PeftModel

    # PiSSA/OLoRA/CorDA: saved as the plain LoRA peft converts them to, on the original base.
    loaded = PeftModel.from_pretrained(base, out / "adapter").eval()
    torch.testing.assert_close(logprobs(loaded, ids), seen["trained"], atol=1e-4, rtol=0)
    recorded = json.loads((out / "train.json").read_text())["adapter"]
    assert recorded["type"] == peft_type and recorded["args"] == TINY_ARGS.get(peft_type, {})


def test_peft_flags_and_yaml_reach_peft_configs(tmp_path: Path) -> None:
    """`--peft-arg` values are YAML; `lora:` stays LoRA; `peft:` names a type and its fields."""
    import argparse

    from evalharness.cli.parser import add_command
    from evalharness.cli.train import add_train_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_command(
        parser.add_subparsers(dest="command"), add_train_arguments.__doc__, add_train_arguments
    )
    base = ["train", "--method", "sft", "--model", "m", "--data", "d", "--out", "o"]
    args = parser.parse_args(
        [*base, "--peft", "ia3", "--peft-arg", "target_modules=[down_proj, up_proj]",
         "--peft-arg", "feedforward_modules=[down_proj]"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.adapter == PeftSettings(
        "ia3", {"target_modules": ["down_proj", "up_proj"], "feedforward_modules": ["down_proj"]}
    )
    built = adapters.build_config(config.adapter.type, config.adapter.args)
    assert type(built).__name__ == "IA3Config" and built.feedforward_modules == {"down_proj"}
    dora = adapters.build_config("dora", {"r": 4})
    assert dora.use_dora and dora.r == 4 and dora.target_modules == "all-linear"
    lora = config_from_args(parser.parse_args([*base, "--lora", "--lora-rank", "4"]))
    assert lora.adapter == PeftSettings(
        "lora", {"r": 4, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
    )
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("method: sft\nmodel: m\ndata: d\nout: o\npeft: {type: loha, r: 4}\n")
    from_yaml = config_from_args(parser.parse_args(["train", "--config", str(yaml_file)]))
    assert from_yaml.adapter == PeftSettings("loha", {"r": 4})


@pytest.mark.parametrize(
    ("argv", "yaml_text", "message"),
    [
        (
            ["--peft", "qlora2"],
            None,
            "unknown peft type 'qlora2' (did you mean lora?); choose one of lora, dora,",
        ),
        (
            ["--peft", "ia3", "--peft-arg", "rank=4"],
            None,
            "peft type ia3 has no argument 'rank'; IA3Config fields: target_modules,",
        ),
        (["--peft-arg", "r=4"], None, "--peft-arg needs --peft TYPE"),
        (
            [],
            "peft:\n  type: vera\n  rr: 4\n",
            "train.yaml:4: field 'peft.rr': peft type vera has no argument 'rr' (did you mean r?)",
        ),
        ([], "peft:\n  type: bofft\n", "train.yaml:3: field 'peft.type': unknown peft type"),
        (
            ["--peft", "adalora", "--peft-arg", "tinit=5", "--peft-arg", "total_step=4"],
            None,
            "AdaLoraConfig rejected the arguments: The supplied schedule values",
        ),
    ],
)
def test_bad_peft_requests_are_one_line_errors(
    argv: list[str],
    yaml_text: str | None,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = []
    if yaml_text is not None:
        path = tmp_path / "train.yaml"
        path.write_text(f"method: sft\n{yaml_text}")
        config = ["--config", str(path)]
    code, _, err = run_cli(
        capsys, "train", *config, "--method", "sft", "--model", "m", "--data", "d",
        "--out", str(tmp_path / "o"), "--quiet", *argv,
    )  # fmt: skip
    assert code != 0
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
