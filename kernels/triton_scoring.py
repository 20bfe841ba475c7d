"""Fused Triton scoring: `log softmax(hidden @ weight.T)[target]` without the `[N, V]` logits.

Forward: programs own a block of rows and a vocabulary split; each walks its split in blocks,
computes each logit tile with `tl.dot` (float32 accumulation), and keeps an online
log-sum-exp, the target logit, the running argmax and, when asked, the running sums that give
entropy and KL to a reference distribution. Only `[N]`-sized results reach memory.

Backward (backward_plan.py): the logits' gradient is materialised a chunk at a time by a Triton
kernel (a matmul with the softmax-gradient epilogue, float32 logits, stored in the inputs'
dtype) inside the unwritten weight-gradient buffer, and the weight and hidden gradients are
cuBLAS matmuls of those chunks. Every gradient element is written once from one float32 sum:
no atomics, no float32 copy of the weight gradient, and the same bits on every run. The old
design (one program per tile adding into float32 buffers with atomics) was bound by ~10^11
float atomics at Llama-3 scale.

Triton decides at decoration time whether to compile or interpret (`TRITON_INTERPRET=1`), so
this module is imported lazily by the dispatcher, after the environment is settled.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from . import backward_plan
from .matmul import addmm_float32_, fp32_matmul_precision
from .stats import TokenStats

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

# Vocabulary columns per forward program: a multiple of every BLOCK_V below. A fixed number (not
# derived from N) keeps the reduction order, and so every row's result, independent of N;
# 4096 gives 8 splits at V=32k and 32 at V=128k, enough programs to fill a GPU at N=2k.
VOCAB_SPLIT_SIZE = 4096


def _configs(rows: list[tuple[int, int, int, int, int]], **extra: int) -> list[triton.Config]:
    return [
        triton.Config(
            {"BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_D": bd, **extra}, num_warps=w, num_stages=s
        )
        for bn, bv, bd, w, s in rows
    ]


# Compiled forward tiles (BLOCK_N, BLOCK_V, BLOCK_D, warps, stages). The autotuner picks per
# (V, D, dtype), never per N, so a row's result does not depend on how many rows share its
# call (batch invariance). CCE's best forward tile on H100 is 128 x 128 x 32 with 4 warps and 4
# stages; BLOCK_D = 32 lets a tile pipeline deeper in the same shared memory. ptxas (sm_90a,
# bf16) keeps the 8-warp 128 x 128 tiles and the 64-row tiles free of register spills; with
# entropy and KL every larger tile spills kilobytes, so 64 x 64 is there for that case.
FORWARD_CONFIGS = _configs(
    [
        (128, 128, 32, 4, 4),
        (128, 128, 32, 8, 4),
        (128, 256, 32, 8, 3),
        (256, 128, 32, 8, 3),
        (128, 128, 64, 8, 3),
        (64, 128, 64, 4, 3),
        (64, 64, 64, 4, 3),
    ]
)
# The backward's logit-gradient kernel is a matmul with an elementwise epilogue: the usual
# Hopper GEMM tiles, and two smaller ones that stay spill-free with the KL term's second
# accumulator. Few configs, and the autotuner is keyed by power-of-two buckets of the window
# (rows, cols), so a training run tunes a handful of times, not per call.
LOGIT_GRAD_CONFIGS = _configs(
    [
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 128, 64, 8, 3),
        (128, 128, 32, 4, 4),
        (64, 128, 64, 4, 3),
        (128, 64, 64, 4, 3),
    ],
    GROUP_N=8,
)
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
def _to_output_dtype(x, dtype: tl.constexpr):
    """`x.to(dtype)`, rounding to nearest even for bfloat16 under the interpreter too."""
    if ROUND_BF16_IN_SOFTWARE and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _logit_tile(
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


@triton.jit
def _forward_kernel(
    H,
    W,
    B,
    T,
    RH,
    RW,
    RB,
    PARTIALS,
    BEST_INDEX,
    n_rows,
    vocab,
    dim,
    ref_dim,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    stride_rhn,
    stride_rhd,
    stride_rwv,
    stride_rwd,
    softcap,
    split_size,
    n_splits,
    HAS_BIAS: tl.constexpr,
    HAS_REF_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    WITH_KL: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Running sums over one vocabulary split for one block of rows, written to `PARTIALS`.

    `PARTIALS` is `[N_PARTIALS, splits, N]`; `combine_partials` reduces over splits. Splitting
    the vocabulary gives a GPU enough programs when N is small; the split size is fixed per
    call shape (never derived from N), so results stay batch-invariant.
    """
    # Splits vary fastest: the programs in flight share one block of rows (read from L2) and
    # sweep the vocabulary splits side by side, instead of every program streaming its own rows.
    split = tl.program_id(0) % n_splits
    rows = (tl.program_id(0) // n_splits) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    targets = tl.load(T + rows, mask=row_mask, other=-1)

    run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_N,), tl.float32)
    target_logit = tl.zeros((BLOCK_N,), tl.float32)
    best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    best_index = tl.zeros((BLOCK_N,), tl.int32)
    weighted_logits = tl.zeros((BLOCK_N,), tl.float32)  # sum exp(z - max) * z, for entropy
    ref_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    ref_sum = tl.zeros((BLOCK_N,), tl.float32)
    ref_gap = tl.zeros((BLOCK_N,), tl.float32)  # sum exp(z_ref - max_ref) * (z_ref - z), for KL

    split_start = split * split_size
    split_stop = tl.minimum(split_start + split_size, vocab)
    for v0 in range(split_start, split_stop, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < split_stop
        z = _logit_tile(
            H, W, B, rows, cols, row_mask, col_mask, dim,
            stride_hn, stride_hd, stride_wv, stride_wd, softcap,
            HAS_BIAS, HAS_SOFTCAP, IEEE, BLOCK_N, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        raw_z = z
        z = tl.where(col_mask[None, :], z, float("-inf"))
        block_max = tl.max(z, 1)
        new_max = tl.maximum(run_max, block_max)
        rescale = tl.exp(run_max - new_max)
        p = tl.exp(z - new_max[:, None])
        run_sum = run_sum * rescale + tl.sum(p, 1)
        if WITH_ENTROPY:
            finite_z = tl.where(col_mask[None, :], z, 0.0)
            weighted_logits = weighted_logits * rescale + tl.sum(p * finite_z, 1)
        target_logit += tl.sum(tl.where(cols[None, :] == targets[:, None], z, 0.0), 1)
        block_arg = tl.argmax(z, 1, tie_break_left=True).to(tl.int32) + v0
        best_index = tl.where(block_max > best, block_arg, best_index)
        best = tl.maximum(best, block_max)
        run_max = new_max
        if WITH_KL:
            ref_z = _logit_tile(
                RH, RW, RB, rows, cols, row_mask, col_mask, ref_dim,
                stride_rhn, stride_rhd, stride_rwv, stride_rwd, softcap,
                HAS_REF_BIAS, HAS_SOFTCAP, IEEE, BLOCK_N, BLOCK_V, BLOCK_D,
            )  # fmt: skip
            gap = tl.where(col_mask[None, :], ref_z - raw_z, 0.0)
            ref_z = tl.where(col_mask[None, :], ref_z, float("-inf"))
            new_ref_max = tl.maximum(ref_max, tl.max(ref_z, 1))
            ref_rescale = tl.exp(ref_max - new_ref_max)
            ref_p = tl.exp(ref_z - new_ref_max[:, None])
            ref_sum = ref_sum * ref_rescale + tl.sum(ref_p, 1)
            ref_gap = ref_gap * ref_rescale + tl.sum(ref_p * gap, 1)
            ref_max = new_ref_max

    field = n_splits * n_rows  # distance between two fields of PARTIALS
    out = PARTIALS + split * n_rows + rows
    tl.store(out, run_max, mask=row_mask)
    tl.store(out + field, run_sum, mask=row_mask)
    tl.store(out + 2 * field, target_logit, mask=row_mask)
    tl.store(out + 3 * field, best, mask=row_mask)
    tl.store(BEST_INDEX + split * n_rows + rows, best_index, mask=row_mask)
    if WITH_ENTROPY:
        tl.store(out + 4 * field, weighted_logits, mask=row_mask)
    if WITH_KL:
        tl.store(out + 5 * field, ref_max, mask=row_mask)
        tl.store(out + 6 * field, ref_sum, mask=row_mask)
        tl.store(out + 7 * field, ref_gap, mask=row_mask)


@triton.jit
def _logit_grad_kernel(
    H,
    W,
    B,
    T,
    RH,
    RW,
    RB,
    LSE,
    ENTROPY,
    REF_LSE,
    G_LOGPROBS,
    G_ENTROPY,
    G_KL,
    DZ,
    COL_SUMS,
    row_start,
    window_rows,
    col_start,
    window_cols,
    dim,
    ref_dim,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    stride_rhn,
    stride_rhd,
    stride_rwv,
    stride_rwd,
    stride_dzn,
    stride_dzv,
    ignore_index,
    softcap,
    rows_bucket,
    cols_bucket,
    HAS_BIAS: tl.constexpr,
    HAS_REF_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    WITH_KL: tl.constexpr,
    WITH_COL_SUMS: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP_N: tl.constexpr,
):
    """`dL/dlogits` for one tile of a `window_rows x window_cols` window, stored in `DZ`.

    The logits are recomputed in float32 (the forward kept only per-row sums), turned into
    their gradient from the per-row upstream gradients, and stored once in DZ's dtype; the
    gradient matmuls that read DZ run in cuBLAS. `rows_bucket`/`cols_bucket` only key the
    autotuner. With `WITH_COL_SUMS`, each program also writes its tile's column sums in float32
    to `COL_SUMS[row block, col]` (the bias gradient, summed without atomics afterwards).

    Programs are numbered in groups of GROUP_N row blocks sweeping the vocabulary together, so
    the programs in flight share their `W` tiles and a few `H` row blocks in L2.
    """
    pid = tl.program_id(0)
    blocks_n = tl.cdiv(window_rows, BLOCK_N)
    blocks_v = tl.cdiv(window_cols, BLOCK_V)
    per_group = GROUP_N * blocks_v
    first_block_n = (pid // per_group) * GROUP_N
    group_rows = tl.minimum(blocks_n - first_block_n, GROUP_N)
    block_n = first_block_n + (pid % per_group) % group_rows
    block_v = (pid % per_group) // group_rows

    local_rows = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    local_cols = block_v * BLOCK_V + tl.arange(0, BLOCK_V)
    row_mask = local_rows < window_rows
    col_mask = local_cols < window_cols
    rows = row_start + local_rows
    cols = col_start + local_cols
    targets = tl.load(T + rows, mask=row_mask, other=ignore_index)
    valid = row_mask & (targets != ignore_index)

    z = _logit_tile(
        H, W, B, rows, cols, row_mask, col_mask, dim,
        stride_hn, stride_hd, stride_wv, stride_wd, softcap,
        HAS_BIAS, HAS_SOFTCAP, IEEE, BLOCK_N, BLOCK_V, BLOCK_D,
    )  # fmt: skip
    lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
    tile_mask = valid[:, None] & col_mask[None, :]
    p = tl.where(tile_mask, tl.exp(z - lse[:, None]), 0.0)

    g_lp = tl.load(G_LOGPROBS + rows, mask=valid, other=0.0)
    grad_z = tl.where(cols[None, :] == targets[:, None], g_lp[:, None], 0.0) - g_lp[:, None] * p
    if WITH_ENTROPY:
        entropy = tl.load(ENTROPY + rows, mask=row_mask, other=0.0)
        g_ent = tl.load(G_ENTROPY + rows, mask=valid, other=0.0)
        grad_z -= g_ent[:, None] * p * (z - lse[:, None] + entropy[:, None])
    if WITH_KL:
        ref_z = _logit_tile(
            RH, RW, RB, rows, cols, row_mask, col_mask, ref_dim,
            stride_rhn, stride_rhd, stride_rwv, stride_rwd, softcap,
            HAS_REF_BIAS, HAS_SOFTCAP, IEEE, BLOCK_N, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        ref_lse = tl.load(REF_LSE + rows, mask=row_mask, other=0.0)
        ref_p = tl.where(tile_mask, tl.exp(ref_z - ref_lse[:, None]), 0.0)
        g_kl = tl.load(G_KL + rows, mask=valid, other=0.0)
        grad_z += g_kl[:, None] * (p - ref_p)
    if HAS_SOFTCAP:
        capped = z / softcap
        grad_z = grad_z * (1.0 - capped * capped)
    grad_z = tl.where(tile_mask, grad_z, 0.0)

    # Every element of the window is written (zeros on ignored rows): DZ is reused scratch.
    # int32 offsets suffice here: a window holds at most ROW_CHUNK x V or N x VOCAB_CHUNK
    # elements (2^31 needs V or N past two million), and int64 ones spill registers in the
    # 4-warp tiles' epilogue (ptxas, sm_90a).
    tl.store(
        DZ + local_rows[:, None] * stride_dzn + local_cols[None, :] * stride_dzv,
        _to_output_dtype(grad_z, DZ.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )
    if WITH_COL_SUMS:
        tl.store(COL_SUMS + block_n * window_cols + local_cols, tl.sum(grad_z, 0), mask=col_mask)


def _autotune_options() -> dict[str, Any]:
    """Short timing and the on-disk cache, where this Triton version has them."""
    wanted = {"warmup": AUTOTUNE_WARMUP_MS, "rep": AUTOTUNE_REP_MS, "cache_results": True}
    accepted = inspect.signature(triton.autotune).parameters
    return {name: value for name, value in wanted.items() if name in accepted}


if INTERPRETED:
    _forward = _forward_kernel
    _logit_grad = _logit_grad_kernel
else:
    _forward = triton.autotune(
        configs=FORWARD_CONFIGS,
        key=["vocab", "dim", "ref_dim", "WITH_ENTROPY", "WITH_KL", "IEEE"],
        **_autotune_options(),
    )(_forward_kernel)
    _logit_grad = triton.autotune(
        configs=LOGIT_GRAD_CONFIGS,
        key=["rows_bucket", "cols_bucket", "dim", "ref_dim", "WITH_ENTROPY", "WITH_KL", "IEEE"],
        reset_to_zero=["COL_SUMS"],
        **_autotune_options(),
    )(_logit_grad_kernel)


def new_output(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised output buffer; every element must be written by the forward kernel."""
    return torch.empty(size, dtype=dtype, device=device)


def new_gradient(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised gradient buffer; the backward writes every element exactly once."""
    return torch.empty(shape, dtype=dtype, device=device)


def _strides(tensor: torch.Tensor | None) -> tuple[int, int]:
    return (0, 0) if tensor is None else (tensor.stride(0), tensor.stride(1))


def _launch_blocks(blocks: dict[str, int] | None) -> dict[str, int]:
    """Explicit block sizes in the interpreter; the autotuner chooses them when compiled.

    Chunk sizes (CHUNK_KEYS) may be given either way; tile sizes only to the interpreter.
    """
    if INTERPRETED:
        return {**INTERPRETER_BLOCKS, **(blocks or {})}
    tiles = sorted(set(blocks or {}) - set(CHUNK_KEYS))
    if tiles:
        raise ValueError(f"block sizes {tiles} are chosen by the autotuner on a GPU")
    return dict(blocks or {})


def _tiles(launch: dict[str, int], *names: str) -> dict[str, int]:
    return {name: launch[name] for name in names if name in launch}


def _common_args(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ref_hidden: torch.Tensor | None,
    ref_weight: torch.Tensor | None,
) -> list[Any]:
    return [
        hidden.shape[0],
        weight.shape[0],
        hidden.shape[1],
        ref_hidden.shape[1] if ref_hidden is not None else 0,
        *_strides(hidden),
        *_strides(weight),
        *_strides(ref_hidden),
        *_strides(ref_weight),
    ]


def combine_partials(
    partials: torch.Tensor,
    best_index: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    *,
    with_entropy: bool,
    with_kl: bool,
) -> tuple[torch.Tensor, ...]:
    """Reduce the per-split running sums `[fields, splits, N]` to per-token outputs.

    Each split holds (max, sum of exp(z - max), target logit or 0, best logit, [sum of
    exp(z - max) * z], [the same three for the reference, with z_ref - z]); rescaling every
    split to the overall max makes them add up exactly as one pass over the vocabulary would.
    """
    run_max, run_sum, target_logit, best = partials[0], partials[1], partials[2], partials[3]
    top = run_max.max(dim=0).values
    weights = torch.exp(run_max - top)
    total = (run_sum * weights).sum(0)
    lse = top + total.log()
    zero = torch.zeros((), dtype=torch.float32, device=partials.device)
    logprobs = torch.where(valid, target_logit.sum(0) - lse, zero)
    best_split = best.argmax(dim=0, keepdim=True)  # the first split holding the top logit
    argmax = valid & (best_index.gather(0, best_split).squeeze(0) == targets)
    entropy = kl = ref_lse = torch.zeros(0, dtype=torch.float32, device=partials.device)
    if with_entropy:
        entropy = torch.where(valid, lse - (partials[4] * weights).sum(0) / total, zero)
    if with_kl:
        ref_max, ref_sum, ref_gap = partials[5], partials[6], partials[7]
        ref_top = ref_max.max(dim=0).values
        ref_weights = torch.exp(ref_max - ref_top)
        ref_total = (ref_sum * ref_weights).sum(0)
        ref_lse = ref_top + ref_total.log()
        gap = (ref_gap * ref_weights).sum(0) / ref_total
        kl = torch.where(valid, gap - ref_lse + lse, zero)
    return lse, logprobs, argmax, entropy, kl, ref_lse


@dataclass
class _Saved:
    """What the backward needs from the forward: inputs, per-row sums and options."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    targets: torch.Tensor
    ref_hidden: torch.Tensor | None
    ref_weight: torch.Tensor | None
    ref_bias: torch.Tensor | None
    lse: torch.Tensor
    entropy: torch.Tensor
    ref_lse: torch.Tensor
    ignore_index: int
    softcap: float | None
    with_entropy: bool
    with_kl: bool


@dataclass
class _Upstream:
    """Per-row upstream gradients of the three outputs, float32 (zeros where absent)."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor


class _LogitGradients:
    """Launches the logit-gradient kernel over windows of rows x vocabulary columns."""

    def __init__(self, saved: _Saved, upstream: _Upstream, launch: dict[str, int]) -> None:
        self.saved, self.upstream = saved, upstream
        self.tiles = _tiles(launch, "BLOCK_N", "BLOCK_V", "BLOCK_D", "GROUP_N")
        if INTERPRETED:
            self.tiles.setdefault("GROUP_N", 2)
        # Column sums get one row per row block; the smallest BLOCK_N any config uses bounds
        # their number (unused rows stay zero).
        self.min_block_n = self.tiles.get(
            "BLOCK_N", min(c.kwargs["BLOCK_N"] for c in LOGIT_GRAD_CONFIGS)
        )
        self.no_sums = torch.zeros(1, dtype=torch.float32, device=saved.hidden.device)

    def column_sums_buffer(self, window_rows: int, window_cols: int) -> torch.Tensor:
        blocks = triton.cdiv(window_rows, self.min_block_n)
        return torch.zeros(blocks, window_cols, dtype=torch.float32, device=self.no_sums.device)

    def __call__(
        self,
        dz: torch.Tensor,
        rows: tuple[int, int],
        cols: tuple[int, int],
        column_sums: torch.Tensor | None = None,
    ) -> None:
        """Write dL/dlogits of `rows x cols` (half-open ranges) into `dz`."""
        s, up = self.saved, self.upstream
        window_rows, window_cols = rows[1] - rows[0], cols[1] - cols[0]

        def grid(meta: dict[str, Any]) -> tuple[int]:
            return (
                triton.cdiv(window_rows, meta["BLOCK_N"])
                * triton.cdiv(window_cols, meta["BLOCK_V"]),
            )

        with_kl = s.with_kl and s.ref_hidden is not None and s.ref_weight is not None
        _logit_grad[grid](
            s.hidden, s.weight, s.bias if s.bias is not None else s.hidden, s.targets,
            s.ref_hidden if with_kl else s.hidden, s.ref_weight if with_kl else s.weight,
            s.ref_bias if s.ref_bias is not None else s.hidden,
            s.lse, s.entropy if s.with_entropy else s.lse, s.ref_lse if with_kl else s.lse,
            up.logprobs, up.entropy, up.kl,
            dz, column_sums if column_sums is not None else self.no_sums,
            rows[0], window_rows, cols[0], window_cols,
            s.hidden.shape[1], s.ref_hidden.shape[1] if with_kl else 0,
            *_strides(s.hidden), *_strides(s.weight),
            *_strides(s.ref_hidden), *_strides(s.ref_weight), *_strides(dz),
            s.ignore_index, float(s.softcap or 1.0),
            triton.next_power_of_2(window_rows), triton.next_power_of_2(window_cols),
            HAS_BIAS=s.bias is not None, HAS_REF_BIAS=s.ref_bias is not None,
            HAS_SOFTCAP=s.softcap is not None, WITH_ENTROPY=s.with_entropy, WITH_KL=with_kl,
            WITH_COL_SUMS=column_sums is not None, IEEE=False, **self.tiles,
        )  # fmt: skip


def _row_pass(
    saved: _Saved,
    logit_grads: _LogitGradients,
    grad_hidden: torch.Tensor | None,
    grad_weight: torch.Tensor | None,
    bias_sums: torch.Tensor | None,
    launch: dict[str, int],
) -> None:
    """`grad_hidden[rows] = dz[rows, :] @ W`, a chunk of rows at a time (each row's gradient is
    one matmul's float32 sum over the whole vocabulary). Borrows the unwritten weight gradient
    as scratch when there is one. Adds the column sums of dz to `bias_sums` when given."""
    hidden, weight = saved.hidden, saved.weight
    n_rows, dim = hidden.shape
    vocab = weight.shape[0]
    chunk = backward_plan.row_chunk_rows(
        n_rows,
        dim,
        borrow_weight_gradient=grad_weight is not None,
        chunk=launch.get("ROW_CHUNK", backward_plan.ROW_CHUNK),
    )
    if grad_weight is not None:
        storage = grad_weight.view(-1)
    else:
        storage = torch.empty(chunk * vocab, dtype=hidden.dtype, device=hidden.device)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        dz = storage[: (stop - start) * vocab].view(stop - start, vocab)
        sums = None if bias_sums is None else logit_grads.column_sums_buffer(stop - start, vocab)
        logit_grads(dz, (start, stop), (0, vocab), sums)
        if grad_hidden is not None:
            torch.mm(dz, weight, out=grad_hidden[start:stop])
        if bias_sums is not None and sums is not None:
            bias_sums += sums.sum(0)


def _vocab_pass(
    saved: _Saved,
    logit_grads: _LogitGradients,
    grad_weight: torch.Tensor,
    hidden_sums: torch.Tensor | None,
    bias_sums: torch.Tensor | None,
    launch: dict[str, int],
    spare: torch.Tensor | None = None,
) -> None:
    """`grad_weight[cols] = dz[:, cols].T @ H`, a chunk of vocabulary columns at a time (each
    element one matmul's float32 sum over all rows, written once). With `hidden_sums` (float32
    `[N, D]`), also `hidden_sums += dz[:, cols] @ W[cols]` (the one-pass schedule).

    `spare` is an unwritten buffer that may serve as the dedicated scratch (the one-pass
    schedule's hidden gradient, written only after this pass); otherwise a small one is made.
    """
    hidden, weight = saved.hidden, saved.weight
    n_rows, dim = hidden.shape
    workspace = launch.get("WORKSPACE_ELEMENTS", backward_plan.WORKSPACE_ELEMENTS)
    if spare is not None:
        workspace = max(workspace, spare.numel())
    chunks = backward_plan.vocab_chunks(
        weight.shape[0],
        dim,
        n_rows,
        chunk=launch.get("VOCAB_CHUNK", backward_plan.VOCAB_CHUNK),
        workspace_elements=workspace,
    )
    own_size = backward_plan.dedicated_elements(chunks, n_rows)
    own = None
    if own_size and spare is not None and spare.numel() >= own_size:
        own = spare.view(-1)
    elif own_size:
        own = torch.empty(own_size, dtype=hidden.dtype, device=hidden.device)
    borrowed = grad_weight.view(-1)
    for chunk in chunks:
        if chunk.scratch_offset is None:
            assert own is not None
            storage, offset = own, 0
        else:
            storage, offset = borrowed, chunk.scratch_offset
        dz = storage[offset : offset + n_rows * chunk.cols].view(n_rows, chunk.cols)
        sums = None if bias_sums is None else logit_grads.column_sums_buffer(n_rows, chunk.cols)
        logit_grads(dz, (0, n_rows), (chunk.start, chunk.stop), sums)
        torch.mm(dz.T, hidden, out=grad_weight[chunk.start : chunk.stop])
        if hidden_sums is not None:
            addmm_float32_(hidden_sums, dz, weight[chunk.start : chunk.stop])
        if bias_sums is not None and sums is not None:
            bias_sums[chunk.start : chunk.stop] += sums.sum(0)


def fused_backward(
    saved: _Saved,
    upstream: _Upstream,
    needs: tuple[bool, bool, bool],
    schedule: backward_plan.Schedule,
    launch: dict[str, int],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients for hidden, weight and bias, in their own dtypes (see backward_plan)."""
    hidden, weight, bias = saved.hidden, saved.weight, saved.bias
    need_h, need_w = needs[0], needs[1]
    need_b = needs[2] and bias is not None
    device, (n_rows, dim) = hidden.device, hidden.shape
    if n_rows == 0:
        return (
            torch.zeros_like(hidden) if need_h else None,
            torch.zeros_like(weight) if need_w else None,
            torch.zeros_like(bias) if need_b and bias is not None else None,
        )
    grad_hidden = new_gradient(tuple(hidden.shape), hidden.dtype, device) if need_h else None
    grad_weight = new_gradient(tuple(weight.shape), weight.dtype, device) if need_w else None
    bias_sums = torch.zeros(weight.shape[0], dtype=torch.float32, device=device) if need_b else None
    logit_grads = _LogitGradients(saved, upstream, launch)
    # cuBLAS float32 matmuls of a training step use tf32, as the kernel's own dots do.
    precision = fp32_matmul_precision(device, "tf32") if hidden.dtype == torch.float32 else None
    with precision or contextlib.nullcontext():
        if grad_weight is None:
            _row_pass(saved, logit_grads, grad_hidden, None, bias_sums, launch)
        elif schedule == "one-pass":
            if grad_hidden is not None and grad_hidden.dtype == torch.float32:
                # float32 inputs: the hidden gradient is its own float32 sum
                _vocab_pass(saved, logit_grads, grad_weight, grad_hidden.zero_(), bias_sums, launch)
            else:
                hidden_sums = (
                    torch.zeros(n_rows, dim, dtype=torch.float32, device=device) if need_h else None
                )
                _vocab_pass(
                    saved, logit_grads, grad_weight, hidden_sums, bias_sums, launch, grad_hidden
                )
                if grad_hidden is not None and hidden_sums is not None:
                    grad_hidden.copy_(hidden_sums)
        else:
            if grad_hidden is not None:
                _row_pass(saved, logit_grads, grad_hidden, grad_weight, None, launch)
            _vocab_pass(saved, logit_grads, grad_weight, None, bias_sums, launch)
    grad_bias = None
    if bias_sums is not None and bias is not None:
        grad_bias = bias_sums.to(bias.dtype)
    return grad_hidden, grad_weight, grad_bias


class _TritonTokenStats(torch.autograd.Function):
    @staticmethod
    def forward(  # noqa: PLR0913 - mirrors the public signature
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        ref_hidden: torch.Tensor | None,
        ref_weight: torch.Tensor | None,
        ref_bias: torch.Tensor | None,
        ignore_index: int,
        softcap: float | None,
        with_entropy: bool,
        schedule: backward_plan.Schedule,
        blocks: dict[str, int] | None,
        training: bool,
    ) -> tuple[torch.Tensor, ...]:
        n_rows, device = hidden.shape[0], hidden.device
        with_kl = ref_hidden is not None
        # Scoring float32 inputs multiplies exactly (ieee); training them uses tf32 tensor cores.
        ieee = hidden.dtype == torch.float32 and not training
        launch = _launch_blocks(blocks)
        split_size = launch.get("SPLIT_SIZE", VOCAB_SPLIT_SIZE)
        n_splits = triton.cdiv(weight.shape[0], split_size)
        n_fields = 8 if with_kl else (5 if with_entropy else 4)
        partials = new_output(n_fields * n_splits * n_rows, torch.float32, device)
        best_index = new_output(n_splits * n_rows, torch.int32, device)
        if n_rows:

            def grid(meta: dict[str, Any]) -> tuple[int]:
                return (triton.cdiv(n_rows, meta["BLOCK_N"]) * n_splits,)

            _forward[grid](
                hidden, weight, bias if bias is not None else hidden, targets,
                ref_hidden if with_kl else hidden, ref_weight if with_kl else weight,
                ref_bias if ref_bias is not None else hidden,
                partials, best_index,
                *_common_args(hidden, weight, ref_hidden, ref_weight),
                float(softcap or 1.0), split_size, n_splits,
                HAS_BIAS=bias is not None, HAS_REF_BIAS=ref_bias is not None,
                HAS_SOFTCAP=softcap is not None, WITH_ENTROPY=with_entropy, WITH_KL=with_kl,
                IEEE=ieee, **_tiles(launch, "BLOCK_N", "BLOCK_V", "BLOCK_D"),
            )  # fmt: skip
        lse, logprobs, argmax, entropy, kl, ref_lse = combine_partials(
            partials.view(n_fields, n_splits, n_rows),
            best_index.view(n_splits, n_rows),
            targets,
            targets != ignore_index,
            with_entropy=with_entropy,
            with_kl=with_kl,
        )
        ctx.save_for_backward(
            hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, lse, entropy, ref_lse
        )
        ctx.options = (ignore_index, softcap, with_entropy, with_kl, schedule, blocks)
        ctx.mark_non_differentiable(argmax)
        return logprobs, entropy, kl, argmax

    @staticmethod
    def backward(  # noqa: PLR0913
        ctx: Any,
        grad_logprobs: torch.Tensor | None,
        grad_entropy: torch.Tensor | None,
        grad_kl: torch.Tensor | None,
        _grad_is_argmax: torch.Tensor | None,
    ) -> tuple[Any, ...]:
        ignore_index, softcap, with_entropy, with_kl, schedule, blocks = ctx.options
        saved = _Saved(*ctx.saved_tensors, ignore_index, softcap, with_entropy, with_kl)
        zeros = torch.zeros(saved.hidden.shape[0], dtype=torch.float32, device=saved.hidden.device)

        def upstream(grad: torch.Tensor | None, enabled: bool = True) -> torch.Tensor:
            return zeros if grad is None or not enabled else grad.float().contiguous()

        with _launch_device(saved.hidden):  # see token_stats_triton
            gradients = fused_backward(
                saved,
                _Upstream(
                    upstream(grad_logprobs),
                    upstream(grad_entropy, with_entropy),
                    upstream(grad_kl, with_kl),
                ),
                (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]),
                schedule,
                _launch_blocks(blocks),
            )
        return (*gradients, *([None] * 10))


def _launch_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """`tensor`'s CUDA device made current for the launches inside (nothing off CUDA)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def token_stats_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    ignore_index: int,
    softcap: float | None,
    entropy: bool,
    ref_hidden: torch.Tensor | None,
    ref_weight: torch.Tensor | None,
    ref_bias: torch.Tensor | None,
    schedule: backward_plan.Schedule = "two-pass",
    blocks: dict[str, int] | None = None,
) -> TokenStats:
    """Run the fused kernels; inputs share one dtype (the dispatcher casts them).

    `schedule` picks how the backward walks its chunks (see backward_plan); the dispatcher's
    rule chooses it per shape.
    """
    # Inside an autograd Function's forward grad mode is always off, so "will a backward
    # follow" is decided here: grad mode on and a differentiable input.
    training = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    if schedule not in backward_plan.SCHEDULES:
        raise ValueError(
            f"unknown backward schedule {schedule!r}; choose from {backward_plan.SCHEDULES}"
        )
    # Triton launches on the current CUDA device, not on the tensors' device: on cuda:1 with
    # cuda:0 current it would run cuda:0 programs on cuda:1 pointers (an illegal address, or a
    # peer read).
    with _launch_device(hidden):
        # The kernels take hidden/weight strides, but index targets and biases by row or column
        # alone: those [N] and [V] vectors are made contiguous (a copy only when they are not).
        outputs = _TritonTokenStats.apply(
            hidden,
            weight,
            None if bias is None else bias.contiguous(),
            targets.contiguous(),
            ref_hidden,
            ref_weight,
            None if ref_bias is None else ref_bias.contiguous(),
            ignore_index,
            softcap,
            entropy,
            schedule,
            blocks,
            training,
        )
    return TokenStats.from_outputs(outputs, entropy=entropy, kl=ref_hidden is not None)
