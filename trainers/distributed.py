"""Several training processes: the accelerator of a launch, what it asked for on CPUs, and the
means and sums the loop takes across processes.

`accelerate launch` says what to run through environment variables (`ACCELERATE_USE_FSDP`,
`FSDP_VERSION`, `ACCELERATE_USE_DEEPSPEED`); `Accelerator` turns them into a distributed type.
On a machine without an accelerator (`cpu=True`, gloo) accelerate 1.16 never reaches its FSDP
branch: `AcceleratorState.__init__` (accelerate/state.py:947) switches to `DistributedType.FSDP`
only from MULTI_GPU and the other accelerator types, so a CPU launch of an FSDP config stays
MULTI_CPU and `prepare` wraps the model in DDP: a full replica per process, silently. torch's
FSDP2 (`fully_shard`) itself runs on CPUs over gloo, so `shard_on_cpu` completes the switch the
way accelerate does it on GPUs; DeepSpeed needs GPUs, and FSDP1 on CPUs is refused.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from evalharness.errors import InputError

#: Methods whose loss is a mean over the batch's completion tokens (`token_mean_contributions`).
TOKEN_MEAN = {"sft", "dft", "asft_anchored"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def requested_sharding() -> str | None:
    """`"fsdp"` or `"deepspeed"` when the launcher's config asked for it, else None (DDP)."""
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return None


def check_cpu_launch(cpu_only: bool) -> None:
    """Refuse, before any model loads, what a CPU-only launch cannot do (instead of DDP).

    DeepSpeed ZeRO needs CUDA devices; accelerate would drop it on CPUs (state.py:935 requires
    `not cpu`). FSDP1 is not run on CPUs here: only FSDP2 is switched on by `shard_on_cpu`.
    """
    if not cpu_only:
        return
    sharding = requested_sharding()
    if sharding == "deepspeed":
        raise InputError(
            "DeepSpeed ZeRO needs GPUs, and this launch has none: use "
            "configs/accelerate/fsdp.yaml (FSDP2) or multi_gpu.yaml (DDP) on CPUs"
        )
    if sharding == "fsdp" and os.environ.get("FSDP_VERSION", "1") != "2":
        raise InputError(
            "FSDP on CPUs runs only as FSDP2: set fsdp_version: 2 in the accelerate config"
        )


def shard_on_cpu(accelerator: Any) -> None:
    """Under a CPU-only launch of an FSDP2 config, make `accelerator` FSDP2 rather than DDP.

    Does what accelerate's `AcceleratorState.__init__` does for FSDP on GPUs (state.py:971-977):
    distributed type FSDP, the plugin (read from the launcher's environment, as `Accelerator`
    reads it) with the run's mixed precision, and the same type in the shared `PartialState`.
    A later accelerate that switches by itself is left alone; one where the switch does not take
    raises a one-line error rather than training unsharded.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if requested_sharding() != "fsdp" or accelerator.num_processes == 1:
        return
    if state.distributed_type == DistributedType.FSDP and getattr(state, "fsdp_plugin", None):
        return
    if state.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.FSDP):
        raise InputError(
            f"the launch asked for FSDP but accelerate set up {state.distributed_type.value}"
        )
    plugin = FullyShardedDataParallelPlugin()
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if not accelerator.is_fsdp2:
        raise InputError(
            f"accelerate {_version()} did not take FSDP2 on CPUs: train with "
            "configs/accelerate/multi_gpu.yaml (DDP) instead"
        )


def _version() -> str:
    import accelerate

    return accelerate.__version__


def global_token_mean(loss: torch.Tensor, local_tokens: torch.Tensor, accelerator: Any) -> Any:
    """A token-mean loss rescaled so that averaging the processes' gradients gives the mean over
    every process's tokens, as one process holding the whole global batch computes.

    Each process divides by its own token count; DDP and FSDP then average the gradients over
    processes, a mean of means that weighs a process's tokens more when it has fewer. Times
    `processes x local / global tokens`, the average is `sum of token losses / global tokens`,
    and so is the mean of the rescaled losses over processes (what the loop logs). One process:
    unchanged. Gradient accumulation still averages its micro-batches' means.
    """
    processes = accelerator.num_processes
    if processes == 1:
        return loss
    local = local_tokens.detach().to(loss.device, torch.float32).reshape(1)
    total = accelerator.reduce(local.clone(), reduction="sum")
    return loss * (processes * local / total.clamp(min=1.0)).squeeze(0).to(loss.dtype)


def without_tied_copies(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """Gathered FSDP/DeepSpeed weights less the copies of tied ones (`lm_head.weight` of a model
    with tied embeddings): gathering gives each its own tensor, so transformers' save no longer
    sees them as one and would store the copy; a single process's checkpoint has it once."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return {key: value for key, value in state.items() if tied.get(key) not in state}


def cpu_only_launch() -> bool:
    """True when several processes were launched (torchrun / `accelerate launch` set WORLD_SIZE)
    on a machine without an accelerator.

    `accelerate` forms a gloo process group on CPUs only when told `cpu=True`; without it every
    process silently trains alone on all the data and all of them write the checkpoint.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    device = getattr(torch, "accelerator", None)
    available = device.is_available() if device is not None else torch.cuda.is_available()
    return not available


def sharded_weights(accelerator: Any) -> bool:
    """FSDP and DeepSpeed hold a shard of the weights per process: saving gathers them."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def fresh_accelerator(**options: Any) -> Any:
    """An `Accelerator` configured by this run (and its launcher) alone.

    accelerate keeps one process-wide `AcceleratorState`: a trainer that ran earlier in the same
    process (a notebook, a test; TRL's `SFTConfig` turns bf16 on) would hand its mixed
    precision to this loop, and policy and reference would then be scored under different
    autocast settings. The distributed `PartialState` (set up by `accelerate launch`) is kept.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(**options)


def mean_over_processes(accelerator: Any, record: dict[str, float]) -> dict[str, float]:
    """Each process's step metrics, averaged over the processes (a no-op on one)."""
    if accelerator.num_processes == 1 or not record:
        return record
    keys = sorted(record)
    values = torch.tensor([record[k] for k in keys], device=accelerator.device)
    means = accelerator.reduce(values, reduction="mean")
    return {k: float(v) for k, v in zip(keys, means.tolist(), strict=True)}


def sum_over_processes(accelerator: Any, count: int) -> int:
    """A count (examples seen) summed over the processes."""
    if accelerator.num_processes == 1:
        return count
    total = accelerator.reduce(torch.tensor(count, device=accelerator.device), reduction="sum")
    return int(total)
