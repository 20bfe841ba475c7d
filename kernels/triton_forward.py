"""The fused forward kernel: per-token log-probability, argmax, entropy and KL without `[N, V]`
logits.

Programs own a block of rows and a vocabulary split; each walks its split in blocks, computes
each logit tile with `tl.dot` (float32 accumulation), and keeps an online log-sum-exp, the target
logit, the running argmax and, when asked, the running sums that give entropy and KL to a
reference distribution. Only `[N]`-sized partial sums per split reach memory; `combine_partials`
reduces them. The launch itself lives in triton_scoring.py.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .triton_tiles import INTERPRETED, autotune_options, logit_tile, strides, tile_configs

# Vocabulary columns per forward program: a multiple of every BLOCK_V below. A fixed number (not
# derived from N) keeps the reduction order, and so every row's result, independent of N;
# 4096 gives 8 splits at V=32k and 32 at V=128k, enough programs to fill a GPU at N=2k.
VOCAB_SPLIT_SIZE = 4096


# Compiled forward tiles (BLOCK_N, BLOCK_V, BLOCK_D, warps, stages). The autotuner picks per
# (V, D, dtype), never per N, so a row's result does not depend on how many rows share its
# call (batch invariance). CCE's best forward tile on H100 is 128 x 128 x 32 with 4 warps and 4
# stages; BLOCK_D = 32 lets a tile pipeline deeper in the same shared memory. ptxas (sm_90a,
# bf16) keeps the 8-warp 128 x 128 tiles and the 64-row tiles free of register spills; with
# entropy and KL every larger tile spills kilobytes, so 64 x 64 is there for that case.
FORWARD_CONFIGS = tile_configs(
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


@triton.jit
def forward_kernel(
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
        z = logit_tile(
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
            ref_z = logit_tile(
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


if INTERPRETED:
    forward = forward_kernel
else:
    forward = triton.autotune(
        configs=FORWARD_CONFIGS,
        key=["vocab", "dim", "ref_dim", "WITH_ENTROPY", "WITH_KL", "IEEE"],
        **autotune_options(),
    )(forward_kernel)


def shape_args(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ref_hidden: torch.Tensor | None,
    ref_weight: torch.Tensor | None,
) -> list[Any]:
    """The forward kernel's size and stride arguments, in its parameter order."""
    return [
        hidden.shape[0],
        weight.shape[0],
        hidden.shape[1],
        ref_hidden.shape[1] if ref_hidden is not None else 0,
        *strides(hidden),
        *strides(weight),
        *strides(ref_hidden),
        *strides(ref_weight),
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
