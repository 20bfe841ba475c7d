"""The float32-output matmuls' fallback when torch refuses the `out_dtype` overloads.

The overloads exist for CUDA tensors only; here CPU tensors are reported as CUDA tensors, so the
real overloads are called and refuse (NotImplementedError on the CPU), as an older CUDA build
of torch would.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from evalharness.kernels import matmul

REAL_MM = torch.mm


@pytest.fixture
def refusing_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU tensors claim to be CUDA tensors, and the overloads start out usable."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(matmul, "_usable", {"mm": True, "addmm": True})


def _operands() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=generator).bfloat16()
    b = torch.randn(5, 4, generator=generator).bfloat16()
    return a, b


def _recording_mm(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """torch.mm that records the out_dtype it is asked for and computes in float32."""
    calls: list[Any] = []

    def mm(a: torch.Tensor, b: torch.Tensor, **options: Any) -> torch.Tensor:
        calls.append(options.get("out_dtype"))
        return REAL_MM(a.float(), b.float(), out=options.get("out"))

    monkeypatch.setattr(torch, "mm", mm)
    return calls


def test_a_refused_addmm_keeps_mm_on_its_float32_output(
    refusing_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _operands()
    acc = torch.ones(6, 4)
    with pytest.warns(RuntimeWarning, match="addmm"):
        matmul.addmm_float32_(acc, a, b)
    assert torch.equal(acc, 1 + a.float() @ b.float())  # widened, the same float32 sums
    calls = _recording_mm(monkeypatch)
    matmul.mm_float32(a, b)
    assert calls == [torch.float32]  # mm still asks for float32 output, without widening


def test_out_of_memory_is_raised_not_taken_for_a_missing_overload(
    refusing_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _operands()

    def out_of_memory(*args: Any, **options: Any) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch, "mm", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        matmul.mm_float32(a, b)
    calls = _recording_mm(monkeypatch)
    matmul.mm_float32(a, b)
    assert calls == [torch.float32]  # the overload is still used after the OOM
