"""Running a local checkpoint: where its weights go, how they load, and the backend base.

`Placement` is the concrete device and dtype of one backend (`evalharness.backends.devices`
is the rule), resolved when the backend is built so a missing device fails before a run
starts. `load_pretrained` loads every local model the same way, straight onto that device.
`LocalModelBackend` is what the transformers backends (`hf:`, `rm:`/`clf:`) share: identity
and placement from the files, weights only on the first uncached request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evalharness.backends import devices
from evalharness.backends.base import Backend
from evalharness.backends.checkpoints import checkpoint_identity, dtype_source, resolve_local_dir
from evalharness.backends.spec import ModelSpec


@dataclass(frozen=True)
class Placement:
    """Where a spec's weights run and in what dtype, resolved once per backend
    (`evalharness.backends.devices` is the rule): the dtype is part of the identity, the rest is
    not."""

    #: `cpu`, `cuda:N`, `mps`: a name, so a CPU machine decides it without importing torch.
    device_name: str
    dtype: str
    device_map: str | None = None

    @property
    def device(self) -> Any:
        import torch

        return torch.device(self.device_name)

    @property
    def device_type(self) -> str:
        """`cpu`, `cuda` or `mps`, without importing torch."""
        return self.device_name.partition(":")[0]

    def record(self) -> dict[str, Any]:
        """What provenance keeps: device, dtype, placement and the card's name."""
        return devices.describe(self.device_name, self.dtype, self.device_map)

    def load_options(self) -> dict[str, Any]:
        """`from_pretrained` keywords that load the weights in this dtype straight onto the
        device (never a full copy on the host first)."""
        return {
            "dtype": devices.torch_dtype(self.dtype),
            **devices.placement(self.device_name, self.device_map),
        }


def resolve_placement(spec: ModelSpec, directory: Path) -> Placement:
    """`spec.device` and `spec.dtype` made concrete for this machine; a one-line InputError for
    a device it lacks (raised when the backend is built, so before any run is created).

    A bare `cuda` becomes the current CUDA device's index, so provenance names the card.
    """
    device = devices.resolve_device_name(spec.device)
    dtype = devices.resolve_dtype(spec.dtype, device, dtype_source(directory))
    return Placement(device, dtype, spec.device_map)


def load_pretrained(
    spec: ModelSpec, directory: Path, model_class: Any, placement: Placement | None = None
) -> tuple[Any, Any]:
    """Tokenizer and model (eval mode) from a checkpoint, as every local backend loads them:
    in the resolved dtype, straight onto the resolved device (`resolve_placement` when no
    `placement` is given)."""
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Our own progress bars and one-line errors are the interface; keep transformers quiet.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if "OMP_NUM_THREADS" not in os.environ:
        # One thread per core this process may use (affinity and container limits honoured).
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    placement = placement or resolve_placement(spec, directory)
    trust = spec.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust)
    model = model_class.from_pretrained(
        directory, trust_remote_code=trust, **placement.load_options()
    )
    return tokenizer, model.eval()


def input_device(model: Any) -> Any:
    """Where a model's inputs go: its device, the first one under a device map."""
    return getattr(model, "device", None)


class LocalModelBackend(Backend):
    """A backend over a local transformers checkpoint, loaded on the first uncached request.

    Building it reads only files: the checkpoint's identity (with the resolved dtype, never the
    device) and its placement; `_model` and `_tokenizer` stay None until a subclass loads them.
    """

    #: The identity's `backend` field: what the checkpoint is run as.
    identity_backend: ClassVar[str]

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = spec.batch_size
        self.auto_batch = spec.auto_batch
        self.directory, weights = resolve_local_dir(spec)
        self.placement = resolve_placement(spec, self.directory)
        self._identity = checkpoint_identity(
            self.identity_backend, spec, self.directory, weights, dtype=self.placement.dtype
        )
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def device_record(self) -> dict[str, Any] | None:
        return self.placement.record()
