"""What benchmarks/scoring.py measures: each path's `fn(hidden, weight, targets) -> logprobs`
(ours and the competitors' adapters: naive PyTorch, Liger-Kernel, Apple's cut-cross-entropy),
the synthetic inputs every path gets, and the float64 reference their errors are taken against.

Kept apart from the measuring so that adding a competitor touches only this file. Imports of
torch and the competitors' packages happen inside the functions: the driver process never
loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PATHS = ("naive", "chunked", "triton", "triton-two-pass", "triton-one-pass", "liger", "cce")
DEFAULT_PATHS = ("naive", "chunked", "triton", "liger", "cce")
OURS = ("chunked", "triton", "triton-two-pass", "triton-one-pass")
CUDA_ONLY = {"triton", "triton-two-pass", "triton-one-pass", "liger", "cce"}
PACKAGES = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}
REFERENCE_ROWS = 256
REFERENCE_CHUNK_ROWS = 1024  # float64 logits of the weight-gradient reference: 1 GiB at V=128k
LOGIT_STD = 3.0  # spread of the synthetic logits, roughly that of a trained LM head


def build_path(name: str, cce_impl: str) -> Callable[..., Any]:
    """`fn(hidden, weight, targets) -> logprobs [N]` for one path; imports happen here."""
    import torch

    if name == "naive":

        def naive(hidden: Any, weight: Any, targets: Any) -> Any:
            logits = (hidden @ weight.T).float()
            return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)

        return naive
    if name in OURS:
        from evalharness.kernels.dispatch import token_stats

        impl = "chunked" if name == "chunked" else "triton"
        schedule = name.removeprefix("triton-") if name.startswith("triton-") else None
        return lambda hidden, weight, targets: (
            token_stats(hidden, weight, targets, impl=impl, schedule=schedule).logprobs
        )
    if name == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import (
            LigerFusedLinearCrossEntropyLoss,
        )

        loss = LigerFusedLinearCrossEntropyLoss(reduction="none")

        def liger(hidden: Any, weight: Any, targets: Any) -> Any:
            nll = loss(weight, hidden, targets)  # Liger puts the weight first
            if isinstance(nll, tuple):  # newer versions may return (loss, z_loss, ...)
                nll = nll[0]
            return -nll

        return liger
    if name == "cce":
        from cut_cross_entropy import linear_cross_entropy

        return lambda hidden, weight, targets: (
            -linear_cross_entropy(hidden, weight, targets, reduction="none", impl=cce_impl)
        )
    raise ValueError(f"unknown path {name!r}")


def make_inputs(
    n: int, d: int, v: int, dtype: Any, device: str, seed: int, grad: bool
) -> tuple[Any, Any, Any]:
    """Deterministic hidden [N, D], weight [V, D], targets [N] (same for every path)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(n, d, dtype=dtype, device=device, generator=generator)
    weight = torch.randn(v, d, dtype=dtype, device=device, generator=generator)
    weight.mul_(LOGIT_STD / d**0.5)
    targets = torch.randint(0, v, (n,), device=device, generator=generator)
    hidden.requires_grad_(grad)
    weight.requires_grad_(grad)
    return hidden, weight, targets


def reference_errors(
    hidden: Any, weight: Any, targets: Any, logprobs: Any, backward: bool
) -> dict[str, float | None]:
    """Max abs errors against float64: log-probs and d sum / d hidden on the first rows, and
    d sum / d weight on the first vocabulary rows (a sum over all rows, built chunk by chunk)."""
    import torch

    rows = min(REFERENCE_ROWS, hidden.shape[0])
    errors: dict[str, float | None] = {"max_abs_err_grad_hidden": None}
    errors["max_abs_err_grad_weight"] = None
    with torch.no_grad():
        h = hidden.detach()[:rows].double()
        w = weight.detach().double()
        t = targets[:rows]
        log_p = torch.log_softmax(h @ w.T, -1)
        ref = log_p.gather(1, t[:, None]).squeeze(1)
        errors["max_abs_err"] = (logprobs[:rows].double() - ref).abs().max().item()
        if backward and hidden.grad is not None:
            ref_grad = w[t] - log_p.exp() @ w  # d log p_t / d h = w_t - sum_j p_j w_j
            errors["max_abs_err_grad_hidden"] = (
                (hidden.grad[:rows].double() - ref_grad).abs().max().item()
            )
        if backward and weight.grad is not None:
            vocab_rows = min(REFERENCE_ROWS, weight.shape[0])
            ref_grad_w = torch.zeros(vocab_rows, w.shape[1], dtype=torch.float64, device=w.device)
            for start in range(0, hidden.shape[0], REFERENCE_CHUNK_ROWS):
                h_chunk = hidden.detach()[start : start + REFERENCE_CHUNK_ROWS].double()
                t_chunk = targets[start : start + REFERENCE_CHUNK_ROWS]
                logits = h_chunk @ w.T
                p = torch.softmax(logits, -1)[:, :vocab_rows]
                del logits
                ref_grad_w -= p.T @ h_chunk  # d log p_t / d w_j = ([j = t] - p_j) h
                hits = t_chunk < vocab_rows
                ref_grad_w.index_add_(0, t_chunk[hits], h_chunk[hits])
            errors["max_abs_err_grad_weight"] = (
                (weight.grad[:vocab_rows].double() - ref_grad_w).abs().max().item()
            )
    return errors
