"""Triton pieces both scoring kernels share: one logit tile, the dot and rounding helpers,
the interpreter switches, autotuning options and launch-argument helpers.

The forward (triton_forward.py) and the backward (triton_backward.py) recompute logits the same
way; keeping `logit_tile` in one place is what makes the backward's logits bit-for-bit those of
the forward. Triton decides at decoration time whether to compile or interpret
(`TRITON_INTERPRET=1`), so these modules are imported lazily by the dispatcher.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
# Triton 3.8's interpreter multiplies bfloat16/float16 tiles as raw bits in `tl.dot`; there the
# tiles are widened first. Products of 16-bit floats are exact in float32, so results match a
# compiled 16-bit dot with float32 accumulation.
WIDEN_DOT_INPUTS: tl.constexpr = tl.constexpr(INTERPRETED)
# The interpreter also converts float32 to bfloat16 by truncation, where compiled code rounds
# to nearest even: there the rounding is done on the bits first, so tests see the GPU's numbers.
ROUND_BF16_IN_SOFTWARE: tl.constexpr = tl.constexpr(INTERPRETED)

# Interpreted programs cost ~1.5 ms each, whatever their size: use few, large blocks there.
# ROW_CHUNK / VOCAB_CHUNK / WORKSPACE_ELEMENTS size the backward's chunks (see backward_plan).
INTERPRETER_BLOCKS = {"BLOCK_N": 32, "BLOCK_V": 256, "BLOCK_D": 64, "SPLIT_SIZE": 512}
CHUNK_KEYS = ("ROW_CHUNK", "VOCAB_CHUNK", "WORKSPACE_ELEMENTS")


def tile_configs(rows: list[tuple[int, int, int, int, int]], **extra: int) -> list[triton.Config]:
    """Autotuner configs from (BLOCK_N, BLOCK_V, BLOCK_D, warps, stages) rows."""
    return [
        triton.Config(
            {"BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_D": bd, **extra}, num_warps=w, num_stages=s
        )
        for bn, bv, bd, w, s in rows
    ]


# Each config is timed for ~AUTOTUNE_REP_MS after AUTOTUNE_WARMUP_MS (the defaults, 25/100 ms,
# made the first N = 32768 backward pay seconds of tuning), and the winner is cached on disk
# with Triton's compiled kernels, so a new process does not tune again.
AUTOTUNE_WARMUP_MS, AUTOTUNE_REP_MS = 5, 25


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _dot(a, b, acc, IEEE: tl.constexpr):
    """`acc + a @ b` with float32 accumulation; exact float32 products when `IEEE`."""
    if WIDEN_DOT_INPUTS:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def to_output_dtype(x, dtype: tl.constexpr):
    """`x.to(dtype)`, rounding to nearest even for bfloat16 under the interpreter too."""
    if ROUND_BF16_IN_SOFTWARE and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def logit_tile(
    h_ptr,
    w_ptr,
    b_ptr,
    rows,
    cols,
    row_mask,
    col_mask,
    dim,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    softcap,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """`[BLOCK_N, BLOCK_V]` logits for `rows x cols`, accumulated in float32 over `dim`.

    Element offsets are int64: `row * stride` passes 2^31 in real inputs (the last positions of
    16 sequences of a [B, 32768, 4096] tensor are 2^27 elements apart; a transposed or large
    head's columns likewise), and an int32 product would wrap to a wrong address.
    """
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_hn
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * stride_wv
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < dim
        wide_d = offs_d.to(tl.int64)[None, :]
        h = tl.load(
            h_rows + wide_d * stride_hd,
            mask=row_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        w = tl.load(
            w_rows + wide_d * stride_wd,
            mask=col_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        acc = _dot(h, tl.trans(w), acc, IEEE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_SOFTCAP:
        acc = softcap * _tanh(acc / softcap)
    return acc


def autotune_options() -> dict[str, Any]:
    """Short timing and the on-disk cache, where this Triton version has them."""
    wanted = {"warmup": AUTOTUNE_WARMUP_MS, "rep": AUTOTUNE_REP_MS, "cache_results": True}
    accepted = inspect.signature(triton.autotune).parameters
    return {name: value for name, value in wanted.items() if name in accepted}


def strides(tensor: torch.Tensor | None) -> tuple[int, int]:
    return (0, 0) if tensor is None else (tensor.stride(0), tensor.stride(1))


def launch_blocks(blocks: dict[str, int] | None) -> dict[str, int]:
    """Explicit block sizes in the interpreter; the autotuner chooses them when compiled.

    Chunk sizes (CHUNK_KEYS) may be given either way; tile sizes only to the interpreter.
    """
    if INTERPRETED:
        return {**INTERPRETER_BLOCKS, **(blocks or {})}
    tiles = sorted(set(blocks or {}) - set(CHUNK_KEYS))
    if tiles:
        raise ValueError(f"block sizes {tiles} are chosen by the autotuner on a GPU")
    return dict(blocks or {})


def tiles(launch: dict[str, int], *names: str) -> dict[str, int]:
    return {name: launch[name] for name in names if name in launch}
