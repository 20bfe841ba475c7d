"""Where a training run computes and in what precision: device, weight dtype, autocast, TF32.

The rule for weights is the one every model path shares (`evalharness.backends.devices`):
`dtype: auto` is the checkpoint's own dtype on an accelerator (bfloat16 for most current models)
and float32 on the CPU, so a CPU run computes exactly what it always did; weights a run trains
in full stay float32 under `auto` (`weights_dtype`).

Autocast follows TRL 1.16, whose configs (`DPOConfig`, `SFTConfig`, `GRPOConfig`, ... through
`trl.trainer.base_config`) turn `bf16` on unless `fp16` is set: `mixed_precision: auto` is bf16
on a CUDA GPU that has it, and `no` on the CPU (TRL would autocast there too, but CPU bf16
kernels are slow and the CPU results must not change) and on other accelerators. A launcher's
own choice (`accelerate launch --mixed_precision`, `ACCELERATE_MIXED_PRECISION`) wins over
`auto`. A full fine-tune's defaults are TRL's: float32 weights, bf16 autocast.

TF32 matrix products for float32 on CUDA are on unless `tf32: false` (transformers leaves
PyTorch's IEEE default alone unless told; float32 matmuls in IEEE are 8x slower on an H100 for
no gain in training). This sets a process-wide PyTorch flag, as `TrainingArguments(tf32=True)`
does (only the CUDA backends' flags: CPU matrix products stay IEEE).

torch is imported inside the functions, as in `evalharness.backends.devices`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from evalharness.backends import devices
from evalharness.errors import InputError

from .config import MIXED_PRECISIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """The device and autocast a run asked for, resolved before its `Accelerator` exists."""

    cpu: bool  # accelerate's `cpu=True`: train on the CPU even where a GPU is visible
    mixed_precision: str  # no, bf16 or fp16, as accelerate takes it

    def accelerator_options(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "mixed_precision": self.mixed_precision}


def plan(device: str, mixed_precision: str, dtype: str, *, cpu_launch: bool = False) -> Placement:
    """Check `device` (one-line error for one this machine lacks) and resolve `auto`s.

    `cpu_launch`: several processes on a machine without an accelerator (they need gloo).
    """
    import torch

    chosen = devices.resolve_device(device, option="device")
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if chosen.type == "cuda" and chosen.index is not None:
        if several:
            raise InputError(
                f"device {device}: under a launcher each process uses its own GPU; leave device "
                "auto (or cuda)"
            )
        torch.cuda.set_device(chosen.index)  # accelerate's single-process "cuda" is the current
    cpu = cpu_launch or chosen.type == "cpu"
    precision = resolve_mixed_precision(mixed_precision, "cpu" if cpu else chosen.type, dtype)
    _forget_other_device(cpu)
    return Placement(cpu=cpu, mixed_precision=precision)


def resolve_mixed_precision(requested: str, device_type: str, dtype: str) -> str:
    """`requested`, or for `auto` the launcher's choice, else bf16 on a CUDA GPU with bf16
    (TRL's default) and `no` elsewhere. fp16 autocast needs float32 weights (its loss scaler
    cannot unscale float16 gradients): asked for over float16 weights it is an error."""
    import torch

    if requested not in MIXED_PRECISIONS:
        raise InputError(
            f"mixed_precision {requested!r} is not one of {', '.join(MIXED_PRECISIONS)}"
        )
    if requested == "fp16" and dtype == "float16":
        raise InputError(
            "mixed_precision fp16 needs float32 weights (its loss scaler cannot unscale float16 "
            "gradients): use dtype float32, or mixed_precision bf16 or no"
        )
    if requested != "auto":
        return requested
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher:
        return launcher
    if device_type == "cuda" and dtype != "float16" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def use_tf32(device: Any, enabled: bool) -> bool:
    """Turn on TF32 matrix products for float32 on a CUDA device; whether they are on."""
    import torch

    if getattr(device, "type", None) != "cuda" or not enabled:
        return False
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # PyTorch 2.9+: per backend (the CPU's untouched)
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return True


def weights_dtype(requested: str, adapter: Any) -> str:
    """The dtype `auto` loads trained weights in: float32 for a full fine-tune, the shared rule
    (checkpoint's dtype on an accelerator) when only an adapter trains.

    A full fine-tune in bfloat16 weights rounds away AdamW's updates below 2^-8 of a weight, most
    of them at the usual learning rates; TRL keeps float32 weights under bf16 autocast, and so
    does `auto` here (autocast gives the tensor-core speed). Under an adapter the base is frozen
    and peft keeps the adapter in float32, so the base loads in its own 16-bit dtype.
    """
    if requested == "auto" and adapter is None:
        return "float32"
    return requested


def warn_if_updates_round_away(dtype: str, adapter: Any) -> None:
    """Full fine-tuning of 16-bit weights: AdamW's steps (about the learning rate) are below
    half a bfloat16 ulp of most weights at the usual rates, and round away. Adapters are
    float32 in peft whatever the base's dtype, so they are not affected."""
    if adapter is None and dtype in ("bfloat16", "float16"):
        log.warning(
            "full fine-tuning in %s weights: updates smaller than 2^-8 of a weight are "
            "rounded away; --dtype float32 keeps float32 weights under autocast (TRL's default)",
            dtype,
        )


def record(device: Any, dtype: str, mixed_precision: str, tf32: bool) -> dict[str, Any]:
    """What the run's metadata (train.json) says about where and how it computed."""
    return {**devices.describe(device, dtype), "mixed_precision": mixed_precision, "tf32": tf32}


def _forget_other_device(cpu: bool) -> None:
    """A single process that earlier used another device (a notebook: a GPU run, then a
    `device: cpu` one) must not keep it: accelerate's process state remembers the first."""
    from accelerate.state import AcceleratorState, PartialState

    state = PartialState._shared_state
    if not state or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    device = state.get("device")
    if device is not None and (device.type == "cpu") != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)
