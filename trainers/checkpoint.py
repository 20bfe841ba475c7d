"""Checkpoints that `evalharness run --model hf:DIR` (or `rm:DIR`) loads directly, and the
metadata a training run writes beside them.

Adapter runs (LoRA and the rest of the PEFT family) are merged into the base weights for the
final checkpoint (and the adapter is kept in `adapter/`), so evaluating one needs nothing but the
directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .distributed import sharded_weights, without_tied_copies
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


def adapter_metadata(config: Any) -> dict[str, Any] | None:
    """The adapter type and its peft arguments as given (None: full fine-tuning)."""
    adapter = config.adapter
    if adapter is None:
        return None
    return {"type": adapter.type, "args": adapter.args, "load_in_4bit": adapter.load_in_4bit}


def save_run(
    trainer: Any, scorer: Any, out: Path, *, final: bool, summary: Any | None = None
) -> None:
    """Save a `loop.Trainer`'s model to `out`: every process takes part, the main one writes.

    All processes wait for each other first (no one still stepping); under FSDP/DeepSpeed
    `get_state_dict` gathers the full weights (a collective, so every process calls it);
    the main process then saves the unwrapped model, and the others wait until it has.
    `summary` (a `TrainSummary`, at the end of the run) adds the run's totals to the metadata.
    """
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(scorer) if sharded_weights(accelerator) else None
    if accelerator.is_main_process:
        if state is not None and not trainer.is_reward_model:
            # PolicyScorer holds the model as `model`: its keys are the model's, prefixed.
            state = {k.removeprefix("model."): v for k, v in state.items()}
        if state is not None:
            state = without_tied_copies(state, core_model(trainer.model))
        unwrapped = accelerator.unwrap_model(scorer)
        save_checkpoint(
            unwrapped if trainer.is_reward_model else unwrapped.model,
            trainer.tokenizer,
            out,
            metadata=run_metadata(trainer, summary),
            merge_lora=final,
            state_dict=state,
            initial_adapter=trainer.initial_adapter,
        )
    accelerator.wait_for_everyone()


def run_metadata(trainer: Any, summary: Any | None) -> dict[str, Any]:
    """What `train.json` records of a run: method, config, base model, hyperparameters,
    processes, placement, adapter, and (with a `summary`) steps, examples, time and metrics."""
    accelerator = trainer.accelerator
    metadata = {
        "method": trainer.method.name,
        "config": trainer.config.to_dict(),
        "base": trainer.base_identity,
        "hyperparameters": {**trainer.hyper, **trainer.options},
        "processes": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "placement": trainer.placement,  # device, dtype, mixed precision, TF32
        "adapter": adapter_metadata(trainer.config),
    }
    if summary is not None:
        metadata.update(
            steps=summary.steps,
            examples=summary.examples,
            seconds=round(summary.seconds, 2),
            final=summary.final,
            eval_before=summary.eval_before,
            eval_after=summary.eval_after,
        )
    return metadata
