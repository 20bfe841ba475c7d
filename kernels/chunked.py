"""Chunked PyTorch scoring: the fallback wherever the Triton kernel cannot run.

Rows are processed a chunk at a time with float32 logits, so at most `chunk x V` logits (and a
few same-sized temporaries) exist at once. On CUDA, bf16/fp16 inputs are multiplied on the
tensor cores straight into float32 (`torch.mm(..., out_dtype=torch.float32)`), without a float32
copy of the head; elsewhere (and for float32 or mixed inputs) the head is widened once.
Every forward matmul has the same shape (the last chunk is padded), so a row's scores never
depend on which other rows share its batch. The backward pass recomputes each chunk's logits
instead of storing them, the same trade the fused kernel makes.
"""

from __future__ import annotations

from typing import Any

import torch

from .matmul import addmm_float32_, mm_float32, native_float32_output
from .stats import GradientAccumulators, TokenStats

# CPU: about 32 MiB of float32 logits per chunk: small enough that the chunk's temporaries stay
# far below the naive path's `[N, V]` logits, large enough that each matmul is still efficient.
CHUNK_ELEMENTS = 1 << 23
# CUDA: a GPU matmul needs hundreds of rows to fill its SMs (65 rows at V = 128k ran at 2.4% of
# peak); 512 rows x 128k columns of float32 logits is 250 MiB, 1024 rows below V = 64k.
CUDA_CHUNK_ROWS, CUDA_LARGE_VOCAB_CHUNK_ROWS, CUDA_LARGE_VOCAB = 1024, 512, 65536


def default_chunk_rows(vocab_size: int, device: torch.device | None = None) -> int:
    if device is not None and device.type == "cuda":
        return CUDA_LARGE_VOCAB_CHUNK_ROWS if vocab_size > CUDA_LARGE_VOCAB else CUDA_CHUNK_ROWS
    return max(16, min(1024, CHUNK_ELEMENTS // max(vocab_size, 1)))


def keeps_16bit_head(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the head stays in its 16-bit dtype (CUDA, one 16-bit dtype for both inputs)."""
    return native_float32_output(hidden, weight)


class _Head:
    """One LM head, writing a chunk's float32 logits into a buffer reused for every chunk.

    The head is either kept as given (16-bit on CUDA, multiplied into float32 natively) or
    widened to float32 once (see `keeps_16bit_head`).

    Reusing buffers matters for memory: a fresh chunk-sized tensor per chunk (and per
    temporary) leaves the allocator holding several freed chunks at once, which showed as a
    third more peak memory than the live tensors on the CPU.
    """

    def __init__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        softcap: float | None,
        chunk_rows: int,
    ) -> None:
        self.hidden = hidden.detach()
        self.keeps_16bit = keeps_16bit_head(hidden, weight)
        self.weight = weight.detach() if self.keeps_16bit else weight.detach().float()
        self.dtype = self.weight.dtype
        self.bias32 = None if bias is None else bias.detach().float()
        self.softcap = softcap
        self.chunk_rows = chunk_rows
        device = hidden.device
        self.padded = torch.zeros(chunk_rows, hidden.shape[1], dtype=self.dtype, device=device)
        self.logits = torch.empty(chunk_rows, weight.shape[0], dtype=torch.float32, device=device)
        self._operand: torch.Tensor | None = None

    def chunk_hidden(self, rows: slice) -> torch.Tensor:
        return self.hidden[rows].to(self.dtype)

    def matmul_operand(self, grad_z: torch.Tensor) -> torch.Tensor:
        """The float32 logit gradient in the head's dtype, for the two gradient matmuls (a
        16-bit copy in a reused buffer when the head is 16-bit, the chunk itself otherwise)."""
        if not self.keeps_16bit:
            return grad_z
        if self._operand is None:
            self._operand = torch.empty(self.logits.shape, dtype=self.dtype, device=grad_z.device)
        return self._operand[: grad_z.shape[0]].copy_(grad_z)

    def logits_for(self, rows: slice, *, pad: bool) -> torch.Tensor:
        """Float32 (soft-capped) logits of `rows`, a view of the shared buffer.

        With `pad`, the matmul always has `chunk_rows` rows (zero rows after the last real one):
        CPU GEMM libraries choose their blocking by the row count, so a row's logits only come
        out bit-identical across batches when every matmul has the same shape.
        """
        chunk = self.chunk_hidden(rows)
        n_rows = chunk.shape[0]
        if pad and n_rows < self.chunk_rows:
            self.padded.zero_()
            self.padded[:n_rows] = chunk
            mm_float32(self.padded, self.weight.T, out=self.logits)
        else:
            mm_float32(chunk, self.weight.T, out=self.logits[:n_rows])
        logits = self.logits[:n_rows]
        if self.bias32 is not None:
            logits += self.bias32
        if self.softcap is not None:
            logits.div_(self.softcap).tanh_().mul_(self.softcap)
        return logits


def _buffer_like(tensor: torch.Tensor, enabled: bool = True) -> torch.Tensor | None:
    return torch.empty_like(tensor) if enabled else None


def _mixed_logit_gradient(  # noqa: PLR0913 - the chunk's whole state
    z: torch.Tensor,
    probs_buffer: torch.Tensor | None,
    grad_buffer: torch.Tensor | None,
    rows: slice,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    ref_lse: torch.Tensor,
    ref_head: _Head | None,
    safe_targets: torch.Tensor,
    g_lp: torch.Tensor | None,
    g_ent: torch.Tensor | None,
    g_kl: torch.Tensor | None,
) -> torch.Tensor:
    """dL/dz for a chunk when entropy or KL terms are in the loss (z is overwritten)."""
    assert probs_buffer is not None and grad_buffer is not None
    count = z.shape[0]
    probs = torch.sub(z, lse[rows, None], out=probs_buffer[:count]).exp_()
    grad_z = grad_buffer[:count].zero_()
    if g_lp is not None:
        grad_z.addcmul_(probs, g_lp[rows, None], value=-1)
        grad_z.scatter_add_(1, safe_targets[rows, None], g_lp[rows, None])
    if g_ent is not None:
        # dH/dz_v = -p_v (log p_v + H) with log p_v = z_v - lse
        term = z.sub_(lse[rows, None]).add_(entropy[rows, None]).mul_(probs)
        grad_z.addcmul_(term, g_ent[rows, None], value=-1)
    if g_kl is not None and ref_head is not None:
        ref_z = ref_head.logits_for(rows, pad=False)
        ref_probs = ref_z.sub_(ref_lse[rows, None]).exp_()
        # dKL(p_ref || p)/dz_v = p_v - p_ref_v
        grad_z.addcmul_(probs.sub_(ref_probs), g_kl[rows, None])
    return grad_z


class _ChunkedTokenStats(torch.autograd.Function):
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
        chunk_rows: int,
    ) -> tuple[torch.Tensor, ...]:
        n_rows, device = hidden.shape[0], hidden.device
        with_kl = ref_hidden is not None and ref_weight is not None
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, 0).long()

        def output(enabled: bool = True) -> torch.Tensor:
            return torch.zeros(n_rows if enabled else 0, dtype=torch.float32, device=device)

        logprobs, lse, entropy, kl, ref_lse = (
            output(),
            output(),
            output(with_entropy),
            output(with_kl),
            output(with_kl),
        )
        is_argmax = torch.zeros(n_rows, dtype=torch.bool, device=device)
        head = _Head(hidden, weight, bias, softcap, chunk_rows)
        ref_head = _Head(ref_hidden, ref_weight, ref_bias, softcap, chunk_rows) if with_kl else None
        scratch = _buffer_like(head.logits, with_entropy or with_kl)

        for start in range(0, n_rows, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n_rows))
            z = head.logits_for(rows, pad=True)
            chunk_targets = safe_targets[rows, None]
            target_logit = z.gather(1, chunk_targets).squeeze(1)
            top, top_index = z.max(dim=-1)  # first index among ties, as argmax
            is_argmax[rows] = top_index == chunk_targets.squeeze(1)
            if scratch is None:
                # Only the normaliser is needed: exponentiate in place.
                chunk_lse = z.sub_(top[:, None]).exp_().sum(-1).log_().add_(top)
            else:
                probs = torch.sub(z, top[:, None], out=scratch[: z.shape[0]]).exp_()
                chunk_lse = probs.sum(-1).log_().add_(top)
                probs.div_(probs.sum(-1, keepdim=True))
                if with_entropy:
                    entropy[rows] = chunk_lse - torch.linalg.vecdot(probs, z)
                if ref_head is not None:
                    ref_z = ref_head.logits_for(rows, pad=True)
                    ref_top = ref_z.max(dim=-1).values
                    ref_probs = torch.sub(ref_z, ref_top[:, None], out=probs).exp_()
                    chunk_ref_lse = ref_probs.sum(-1).log_().add_(ref_top)
                    ref_probs.div_(ref_probs.sum(-1, keepdim=True))
                    ref_lse[rows] = chunk_ref_lse
                    # KL(p_ref || p) = sum p_ref * (z_ref - z) - lse_ref + lse
                    gap = torch.linalg.vecdot(ref_probs, ref_z.sub_(z))
                    kl[rows] = gap - chunk_ref_lse + chunk_lse
            lse[rows] = chunk_lse
            logprobs[rows] = target_logit - chunk_lse

        zero = torch.zeros((), dtype=torch.float32, device=device)
        logprobs = torch.where(valid, logprobs, zero)
        is_argmax &= valid
        if with_entropy:
            entropy = torch.where(valid, entropy, zero)
        if with_kl:
            kl = torch.where(valid, kl, zero)
        ctx.save_for_backward(
            hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, lse, entropy, ref_lse
        )
        ctx.options = (ignore_index, softcap, with_entropy, with_kl, chunk_rows)
        ctx.mark_non_differentiable(is_argmax)
        return logprobs, entropy, kl, is_argmax

    @staticmethod
    def backward(  # noqa: PLR0913
        ctx: Any,
        grad_logprobs: torch.Tensor | None,
        grad_entropy: torch.Tensor | None,
        grad_kl: torch.Tensor | None,
        _grad_is_argmax: torch.Tensor | None,
    ) -> tuple[Any, ...]:
        hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, lse, entropy, ref_lse = (
            ctx.saved_tensors
        )
        ignore_index, softcap, with_entropy, with_kl, chunk_rows = ctx.options
        n_rows = hidden.shape[0]
        valid = (targets != ignore_index).float()
        safe_targets = torch.where(targets != ignore_index, targets, 0).long()

        def upstream(grad: torch.Tensor | None, enabled: bool) -> torch.Tensor | None:
            return grad.float() * valid if (enabled and grad is not None) else None

        g_lp = upstream(grad_logprobs, True)
        g_ent = upstream(grad_entropy, with_entropy)
        g_kl = upstream(grad_kl, with_kl)

        # Log-probs alone (the usual training case) turn the logits into their gradient in
        # place: one chunk buffer. Entropy or KL terms need probabilities and logits together.
        in_place = g_ent is None and g_kl is None
        grads = GradientAccumulators(hidden, weight, bias, ctx.needs_input_grad[:3])
        if in_place and g_lp is None:
            grads.skip_all()  # nothing reaches the logits
        if not grads.any_needed:
            return grads.results(n_other_inputs=8)

        head = _Head(hidden, weight, bias, softcap, chunk_rows)
        ref_head = _Head(ref_hidden, ref_weight, ref_bias, softcap, chunk_rows) if with_kl else None
        probs_buffer = _buffer_like(head.logits, not in_place)
        grad_buffer = _buffer_like(head.logits, not in_place)
        cap_buffer = _buffer_like(head.logits, softcap is not None)

        for start in range(0, n_rows, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n_rows))
            count = rows.stop - rows.start
            z = head.logits_for(rows, pad=False)
            if cap_buffer is not None:
                # d(c * tanh(x / c))/dx = 1 - (capped / c)^2, taken before z is reused below.
                cap_slope = torch.div(z, softcap, out=cap_buffer[:count]).square_().neg_().add_(1)
            if in_place and g_lp is not None:
                # dlogp_t/dz_v = [v = t] - p_v
                grad_z = z.sub_(lse[rows, None]).exp_().mul_(g_lp[rows, None]).neg_()
                grad_z.scatter_add_(1, safe_targets[rows, None], g_lp[rows, None])
            else:
                grad_z = _mixed_logit_gradient(
                    z, probs_buffer, grad_buffer, rows, lse, entropy, ref_lse, ref_head,
                    safe_targets, g_lp, g_ent, g_kl,
                )  # fmt: skip
            if cap_buffer is not None:
                grad_z.mul_(cap_slope)
            operand = head.matmul_operand(grad_z)
            if grads.need_hidden:
                mm_float32(operand, head.weight, out=grads.grad_hidden[rows])
            if grads.need_weight:
                addmm_float32_(grads.grad_weight, operand.T, head.chunk_hidden(rows))
            if grads.need_bias:
                grads.grad_bias += grad_z.sum(0)

        return grads.results(n_other_inputs=8)


def token_stats_chunked(
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
    chunk_rows: int | None = None,
) -> TokenStats:
    rows = chunk_rows or default_chunk_rows(weight.shape[0], hidden.device)
    outputs = _ChunkedTokenStats.apply(
        hidden,
        weight,
        bias,
        targets,
        ref_hidden,
        ref_weight,
        ref_bias,
        ignore_index,
        softcap,
        entropy,
        rows,
    )
    return TokenStats.from_outputs(outputs, entropy=entropy, kl=ref_hidden is not None)
