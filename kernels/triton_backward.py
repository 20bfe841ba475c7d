"""The fused backward: gradients of hidden, weight and bias without `[N, V]` float32 logits.

The logits' gradient is materialised a chunk at a time by a Triton kernel (a matmul with the
softmax-gradient epilogue, float32 logits, stored in the inputs' dtype) inside the unwritten
weight-gradient buffer, and the weight and hidden gradients are cuBLAS matmuls of those chunks
(backward_plan.py sizes the chunks). Every gradient element is written once from one float32
sum: no atomics, no float32 copy of the weight gradient, and the same bits on every run. The old
design (one program per tile adding into float32 buffers with atomics) was bound by ~10^11
float atomics at Llama-3 scale.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from . import backward_plan
from .matmul import addmm_float32_, fp32_matmul_precision
from .triton_tiles import (
    INTERPRETED,
    autotune_options,
    logit_tile,
    strides,
    tile_configs,
    tiles,
    to_output_dtype,
)

# The backward's logit-gradient kernel is a matmul with an elementwise epilogue: the usual
# Hopper GEMM tiles, and two smaller ones that stay spill-free with the KL term's second
# accumulator. Few configs, and the autotuner is keyed by power-of-two buckets of the window
# (rows, cols), so a training run tunes a handful of times, not per call.
LOGIT_GRAD_CONFIGS = tile_configs(
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


@triton.jit
def logit_grad_kernel(
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

    z = logit_tile(
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
        ref_z = logit_tile(
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
        to_output_dtype(grad_z, DZ.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )
    if WITH_COL_SUMS:
        tl.store(COL_SUMS + block_n * window_cols + local_cols, tl.sum(grad_z, 0), mask=col_mask)


if INTERPRETED:
    logit_grad = logit_grad_kernel
else:
    logit_grad = triton.autotune(
        configs=LOGIT_GRAD_CONFIGS,
        key=["rows_bucket", "cols_bucket", "dim", "ref_dim", "WITH_ENTROPY", "WITH_KL", "IEEE"],
        reset_to_zero=["COL_SUMS"],
        **autotune_options(),
    )(logit_grad_kernel)


def new_gradient(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised gradient buffer; the backward writes every element exactly once."""
    return torch.empty(shape, dtype=dtype, device=device)


@dataclass
class Saved:
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
class Upstream:
    """Per-row upstream gradients of the three outputs, float32 (zeros where absent)."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor


class LogitGradients:
    """Launches the logit-gradient kernel over windows of rows x vocabulary columns."""

    def __init__(self, saved: Saved, upstream: Upstream, launch: dict[str, int]) -> None:
        self.saved, self.upstream = saved, upstream
        self.tiles = tiles(launch, "BLOCK_N", "BLOCK_V", "BLOCK_D", "GROUP_N")
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
        logit_grad[grid](
            s.hidden, s.weight, s.bias if s.bias is not None else s.hidden, s.targets,
            s.ref_hidden if with_kl else s.hidden, s.ref_weight if with_kl else s.weight,
            s.ref_bias if s.ref_bias is not None else s.hidden,
            s.lse, s.entropy if s.with_entropy else s.lse, s.ref_lse if with_kl else s.lse,
            up.logprobs, up.entropy, up.kl,
            dz, column_sums if column_sums is not None else self.no_sums,
            rows[0], window_rows, cols[0], window_cols,
            s.hidden.shape[1], s.ref_hidden.shape[1] if with_kl else 0,
            *strides(s.hidden), *strides(s.weight),
            *strides(s.ref_hidden), *strides(s.ref_weight), *strides(dz),
            s.ignore_index, float(s.softcap or 1.0),
            triton.next_power_of_2(window_rows), triton.next_power_of_2(window_cols),
            HAS_BIAS=s.bias is not None, HAS_REF_BIAS=s.ref_bias is not None,
            HAS_SOFTCAP=s.softcap is not None, WITH_ENTROPY=s.with_entropy, WITH_KL=with_kl,
            WITH_COL_SUMS=column_sums is not None, IEEE=False, **self.tiles,
        )  # fmt: skip


def _row_pass(
    saved: Saved,
    logit_grads: LogitGradients,
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
    saved: Saved,
    logit_grads: LogitGradients,
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
    saved: Saved,
    upstream: Upstream,
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
    logit_grads = LogitGradients(saved, upstream, launch)
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
