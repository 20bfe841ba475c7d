"""One entry point for token scoring that picks the fastest path able to run here.

`auto` uses the fused Triton kernel for CUDA tensors when Triton is installed, and the chunked
PyTorch path otherwise (CPU, MPS, or no Triton). `triton` on CPU tensors runs under Triton's
interpreter and needs `TRITON_INTERPRET=1` (for tests: it is far too slow for real work).
`EVALHARNESS_SCORING_IMPL` overrides `auto`, e.g. to rule the kernel out when diagnosing a run.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from evalharness.errors import InputError

from .chunked import token_stats_chunked
from .implementations import ENV_VAR, IMPLEMENTATIONS, implementation_from_env, triton_installed
from .reference import token_stats_reference
from .stats import IGNORE_INDEX, TokenStats, check_inputs

Implementation = Literal["auto", "triton", "chunked", "reference"]


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_implementation(impl: str, device: torch.device) -> str:
    """The concrete path for `impl` on `device`, or an error saying why it cannot run.

    A bad `impl` argument is a ValueError (a caller's bug); a bad EVALHARNESS_SCORING_IMPL is
    an InputError naming the variable, since the user set it.
    """
    from_env = impl == "auto"
    if from_env:
        impl = implementation_from_env()
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown scoring implementation {impl!r}; choose from {IMPLEMENTATIONS}")
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_installed() else "chunked"
    if impl == "triton":
        error = InputError if from_env else ValueError
        source = f"{ENV_VAR}=triton" if from_env else "scoring implementation 'triton'"
        if not triton_installed():
            raise error(f"{source} needs the triton package")
        if device.type != "cuda" and not triton_interpreted():
            raise error(f"{source} on {device.type} tensors needs TRITON_INTERPRET=1")
    return impl


def token_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    softcap: float | None = None,
    entropy: bool = False,
    ref_hidden: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    impl: Implementation = "auto",
    chunk_rows: int | None = None,
    blocks: dict[str, int] | None = None,
) -> TokenStats:
    """Log-probability of each target token under `softmax(hidden @ weight.T + bias)`.

    Optional outputs: per-token `entropy` of the policy distribution, and `kl` =
    KL(p_ref || p) per token when the reference's last hidden states and LM head are given
    (anchored SFT, distillation). `softcap` applies `c * tanh(z / c)` to both models' logits.
    Gradients flow to `hidden`, `weight` and `bias`; the reference side is a constant.
    `chunk_rows` tunes the chunked path and `blocks` the interpreted kernel (tests only).
    """
    check_inputs(hidden, weight, targets, bias, ignore_index, ref_hidden, ref_weight, ref_bias)
    path = resolve_implementation(impl, hidden.device)
    options = dict(
        ignore_index=ignore_index,
        softcap=softcap,
        entropy=entropy,
        ref_hidden=ref_hidden,
        ref_weight=ref_weight,
        ref_bias=ref_bias,
    )
    if path == "reference":
        return token_stats_reference(hidden, weight, targets, bias, **options)
    if path == "chunked":
        return token_stats_chunked(hidden, weight, targets, bias, chunk_rows=chunk_rows, **options)

    from .triton_scoring import token_stats_triton

    dtype = torch.promote_types(hidden.dtype, weight.dtype)
    if ref_hidden is not None and ref_weight is not None:
        ref_hidden, ref_weight = ref_hidden.to(dtype), ref_weight.to(dtype)
        options.update(ref_hidden=ref_hidden, ref_weight=ref_weight)
    return token_stats_triton(
        hidden.to(dtype), weight.to(dtype), targets, bias, blocks=blocks, **options
    )


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    softcap: float | None = None,
    impl: Implementation = "auto",
) -> torch.Tensor:
    """`[N]` float32 log-probabilities of `targets`; 0 where the target is `ignore_index`."""
    return token_stats(
        hidden, weight, targets, bias, ignore_index=ignore_index, softcap=softcap, impl=impl
    ).logprobs
