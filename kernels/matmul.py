"""Matmuls with float32 results from 16-bit inputs, without float32 copies of the inputs.

On CUDA, `torch.mm(a, b, out_dtype=torch.float32)` runs bf16/fp16 inputs on the tensor cores
and keeps cuBLAS's float32 accumulator as the result. Other devices lack that overload (torch
2.13 registers it for CUDA only), so there the inputs are widened first: products of 16-bit
floats are exact in float32, so both give the same float32-accumulated result.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

HALF_DTYPES = (torch.bfloat16, torch.float16)


# Per overload; cleared (with a warning) when this torch build's CUDA refuses it. A release with
# `mm(..., out_dtype=)` may still refuse `addmm`'s float32 `self` next to 16-bit inputs (the
# first ones check that they match): a refused addmm must not widen every forward matmul too.
_usable = {"mm": True, "addmm": True}


def native_float32_output(a: torch.Tensor, b: torch.Tensor, op: str = "mm") -> bool:
    """Whether `op` can produce float32 directly from these (16-bit, CUDA) inputs."""
    return _usable[op] and a.is_cuda and a.dtype in HALF_DTYPES and b.dtype == a.dtype


def _unsupported(op: str, error: Exception) -> None:
    """Widen `op`'s operands from now on: slower and more memory, the same float32 sums.

    Running out of memory is not a missing overload (torch's OutOfMemoryError is a
    RuntimeError): it propagates, and widened copies would only need more memory.
    """
    if isinstance(error, torch.cuda.OutOfMemoryError):
        raise error
    _usable[op] = False
    warnings.warn(
        f"torch.{op}(..., out_dtype=torch.float32) failed ({error}); widening 16-bit operands",
        RuntimeWarning,
        stacklevel=3,
    )


def mm_float32(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`a @ b` as float32 with float32 accumulation (into `out` when given)."""
    if native_float32_output(a, b, "mm"):
        try:
            if out is None:
                return torch.mm(a, b, out_dtype=torch.float32)
            return torch.mm(a, b, out_dtype=torch.float32, out=out)
        except (RuntimeError, NotImplementedError, TypeError) as error:
            _unsupported("mm", error)
    return torch.mm(a.float(), b.float(), out=out)


def addmm_float32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`acc += a @ b` for a float32 `acc`, accumulating in float32."""
    if native_float32_output(a, b, "addmm"):
        try:
            return torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
        except (RuntimeError, NotImplementedError, TypeError) as error:
            _unsupported("addmm", error)
    return acc.addmm_(a.float(), b.float())


@contextmanager
def fp32_matmul_precision(device: torch.device, precision: str) -> Iterator[None]:
    """cuBLAS float32 matmuls at `precision` ("tf32" or "ieee") inside the block, restored after.

    Training in float32 gets tensor cores (tf32) as PyTorch's autocast-free fp32 training does
    with TF32 enabled; scoring keeps "ieee" so log-probs stay exact to float32.
    """
    if device.type != "cuda":
        yield
        return
    settings = torch.backends.cuda.matmul
    try:
        previous = settings.fp32_precision
        settings.fp32_precision = precision
    except (AttributeError, RuntimeError):  # an older torch, or the legacy allow_tf32 in use
        yield
        return
    try:
        yield
    finally:
        settings.fp32_precision = previous
