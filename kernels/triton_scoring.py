"""Fused Triton scoring: `log softmax(hidden @ weight.T)[target]` without the `[N, V]` logits.

The entry point and the autograd glue: `token_stats_triton` launches the forward kernel
(triton_forward.py) and `_TritonTokenStats.backward` runs the chunked backward
(triton_backward.py); triton_tiles.py holds what both kernels share. The launches stay here,
with the buffers they allocate, so that one place decides the launch device, the tiles and
the float32 precision of a call.

Triton decides at decoration time whether to compile or interpret (`TRITON_INTERPRET=1`), so
this module is imported lazily by the dispatcher, after the environment is settled.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import triton

from . import backward_plan
from .stats import TokenStats
from .triton_backward import Saved, Upstream, fused_backward
from .triton_forward import VOCAB_SPLIT_SIZE, combine_partials, shape_args
from .triton_forward import forward as _forward  # looked up here at each launch
from .triton_tiles import launch_blocks, tiles


def new_output(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised output buffer; every element must be written by the forward kernel."""
    return torch.empty(size, dtype=dtype, device=device)


class _TritonTokenStats(torch.autograd.Function):
    """The fused forward, saving what the chunked backward recomputes the logits from."""

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
        launch = launch_blocks(blocks)
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
                *shape_args(hidden, weight, ref_hidden, ref_weight),
                float(softcap or 1.0), split_size, n_splits,
                HAS_BIAS=bias is not None, HAS_REF_BIAS=ref_bias is not None,
                HAS_SOFTCAP=softcap is not None, WITH_ENTROPY=with_entropy, WITH_KL=with_kl,
                IEEE=ieee, **tiles(launch, "BLOCK_N", "BLOCK_V", "BLOCK_D"),
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
        saved = Saved(*ctx.saved_tensors, ignore_index, softcap, with_entropy, with_kl)
        zeros = torch.zeros(saved.hidden.shape[0], dtype=torch.float32, device=saved.hidden.device)

        def upstream(grad: torch.Tensor | None, enabled: bool = True) -> torch.Tensor:
            return zeros if grad is None or not enabled else grad.float().contiguous()

        with _launch_device(saved.hidden):  # see token_stats_triton
            gradients = fused_backward(
                saved,
                Upstream(
                    upstream(grad_logprobs),
                    upstream(grad_entropy, with_entropy),
                    upstream(grad_kl, with_kl),
                ),
                (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]),
                schedule,
                launch_blocks(blocks),
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
