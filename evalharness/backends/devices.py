"""Where a model runs and in what precision: one rule for every path that loads weights.

Users run this on GPUs. A model named by a spec (`hf:`, `rm:`, `clf:`, judges, `serve`,
`score`, `train`) goes to the first accelerator this process can see unless told otherwise
(`--device cpu|cuda|cuda:N|mps`), and `--device-map auto` spreads a model too large for one GPU
over all of them (accelerate's placement). `dtype="auto"` means the checkpoint's own dtype on an
accelerator (bfloat16 for most current models) and float32 on the CPU, where 16-bit matrix
products are slow and, for scoring, needlessly imprecise: this is what lm-eval and vLLM do on a
GPU, and what this project always did on the CPU.

The device is not part of a model's identity (the same weights in the same dtype answer the
same, up to kernel rounding); the resolved dtype is, so a cached float32 answer is never served
for a bfloat16 run. Both are recorded in a run's provenance.

torch is imported inside the functions: the CLI's start-up must not pay for it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from evalharness.errors import InputError

#: What `--device` accepts; `auto` is the default everywhere.
DEVICE_HELP = "auto (first accelerator, else cpu), cpu, cuda, cuda:N, mps"
#: accelerate's placement strategies for `--device-map`.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu(:\d+)?|mps|cuda(:\d+)?)$")
#: The dtypes a checkpoint's config may name and the names this project uses for them.
_CHECKPOINT_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
    "half": "float16",
}


def parse_device(text: str | None, *, option: str = "--device") -> str:
    """The normalised device name, or a one-line error naming the option."""
    value = (text or "auto").strip().lower()
    if not _DEVICE_PATTERN.match(value):
        raise InputError(f"{option} {text!r} is not a device; use {DEVICE_HELP}")
    # `cpu:N` is what accelerate names a process's device in a CPU launch: one host.
    return "cpu" if value.startswith("cpu") else value


def parse_device_map(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip().lower()
    if value not in DEVICE_MAPS:
        raise InputError(
            f"--device-map {text!r} is not a placement; use one of {', '.join(DEVICE_MAPS)}"
        )
    return value


#: Device files an accelerator torch can use leaves on Linux: NVIDIA's driver, ROCm's kernel
#: driver (AMD GPUs appear as `cuda` in torch), WSL2's GPU paravirtualisation.
_ACCELERATOR_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def accelerator_possible() -> bool:
    """False when no accelerator can be visible to torch here, decided without importing it.

    A cached run never loads a model, yet its identity needs the dtype `auto` resolves to, and
    so whether an accelerator exists; importing torch only to hear "no" would cost a second on
    every cached run of every CPU machine (CI). Without any GPU driver, torch sees none.
    """
    if "torch" in sys.modules or sys.platform == "darwin":
        return True  # already paid for, or Apple's GPU (MPS): ask torch
    return any(os.path.exists(path) for path in _ACCELERATOR_FILES)


def accelerator_type() -> str | None:
    """`cuda` or `mps` when this process can use one, else None."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return None


def resolve_device(text: str | None = "auto", *, option: str = "--device") -> Any:
    """The `torch.device` a model named by a spec runs on; an error when the machine lacks it.

    `auto` is the first accelerator (`cuda` means the current CUDA device, as torch does).
    """
    import torch

    value = parse_device(text, option=option)
    if value == "auto":
        return torch.device(accelerator_type() or "cpu")
    device = torch.device(value)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{option} {value}: no CUDA device is visible to this process")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"{option} {value}: this process sees {torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and accelerator_type() != "mps":
        raise InputError(f"{option} mps: no Apple GPU (MPS) is available")
    return device


def resolve_device_name(text: str | None = "auto", *, option: str = "--device") -> str:
    """`resolve_device` as a name (`cpu`, `cuda:0`, `mps`), with a bare `cuda` made the current
    CUDA device so provenance names the card; torch is imported only where an accelerator
    could exist (`accelerator_possible`)."""
    value = parse_device(text, option=option)
    if not accelerator_possible():
        if value in ("auto", "cpu"):
            return "cpu"
        raise InputError(f"{option} {value}: no {_KIND[value[:4]]} is visible to this process")
    import torch

    device = resolve_device(value, option=option)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


_KIND = {"cuda": "CUDA device", "mps": "Apple GPU (MPS)"}


def checkpoint_dtype_name(directory: Path | None) -> str | None:
    """The dtype a transformers checkpoint declares in config.json (`dtype`, or the older
    `torch_dtype`; a multimodal model's `text_config` too), or None when it declares none."""
    if directory is None:
        return None
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for section in (config, config.get("text_config")):
        if isinstance(section, dict):
            for key in ("dtype", "torch_dtype"):
                name = section.get(key)
                if isinstance(name, str):
                    name = name.removeprefix("torch.")
                    if name in _CHECKPOINT_DTYPES:
                        return _CHECKPOINT_DTYPES[name]
    return None


def resolve_dtype(requested: str, device: Any, directory: Path | None = None) -> str:
    """The dtype a model is loaded in: `requested`, or for `auto` the checkpoint's dtype on an
    accelerator (float32 when it declares none) and float32 on the CPU."""
    if requested != "auto":
        return requested
    if getattr(device, "type", str(device)) == "cpu":
        return "float32"
    return checkpoint_dtype_name(directory) or "float32"


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def placement(device: Any, device_map: str | None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that put the weights where they run, loaded straight
    there (no full copy on the host first)."""
    if device_map is not None:
        return {"device_map": device_map}
    return {"device_map": {"": str(device)}}


def describe(device: Any, dtype: str, device_map: str | None = None) -> dict[str, Any]:
    """What provenance records about where a model ran: device, dtype, placement and the card."""
    record: dict[str, Any] = {"device": str(device), "dtype": dtype}
    if device_map is not None:
        record["device_map"] = device_map
    if getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        record["device_name"] = torch.cuda.get_device_name(device)
    return record
