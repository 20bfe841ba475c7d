"""Checkpoints that `evalharness run --model hf:DIR` (or `rm:DIR`) loads directly.

LoRA runs are merged into the base weights for the final checkpoint (and the adapter is kept in
`adapter/`), so evaluating a LoRA run needs nothing but the directory.
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
) -> Path:
    """Write safetensors weights, tokenizer and `train.json`; returns the directory.

    `state_dict`: the full weights gathered from FSDP/DeepSpeed shards (the model object itself
    then holds only this process's shard); None saves the model's own weights.
    """
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(out / "adapter", safe_serialization=True)
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
