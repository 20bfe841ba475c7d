"""Checkpoints that `evalharness run --model hf:DIR` (or `rm:DIR`) loads directly.

Adapter runs (LoRA and the rest of the PEFT family) are merged into the base weights for the
final checkpoint (and the adapter is kept in `adapter/`), so evaluating one needs nothing but the
directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .models import core_model


def save_checkpoint(
    model: Any,
    tokenizer: Any,
    out: Path,
    *,
    metadata: dict[str, Any],
    merge_lora: bool,
    state_dict: dict[str, Any] | None = None,
    initial_adapter: Path | None = None,
) -> Path:
    """Write safetensors weights, tokenizer and `train.json`; returns the directory.

    `state_dict`: the full weights gathered from FSDP/DeepSpeed shards (the model object itself
    then holds only this process's shard); None saves the model's own weights.
    `initial_adapter`: a PiSSA/OLoRA/CorDA adapter as initialised; `adapter/` is then saved as
    the plain LoRA peft converts it to, which applies to the original base (not the residual).
    """
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        conversion = {}
        if initial_adapter is not None:
            conversion["path_initial_model_for_weight_conversion"] = str(initial_adapter)
        model.save_pretrained(out / "adapter", safe_serialization=True, **conversion)
        if not merge_lora:
            _write_metadata(out, metadata)
            return out
        model = model.merge_and_unload()
    core_model(model).save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    _write_metadata(out, metadata)
    return out


def _write_metadata(out: Path, metadata: dict[str, Any]) -> None:
    (out / "train.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
