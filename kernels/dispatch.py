"""One entry point for token scoring that picks the fastest path able to run here.

`auto` follows AUTO_RULES, a table keyed by device and row count: on CUDA with Triton installed
the fused kernel, with the backward schedule the table names for that many rows; anywhere else
(CPU, MPS, no Triton) the chunked PyTorch path. `triton` on CPU tensors runs under Triton's
interpreter and needs `TRITON_INTERPRET=1` (for tests: it is far too slow for real work).
`EVALHARNESS_SCORING_IMPL` overrides `auto`, e.g. to rule the kernel out when diagnosing a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

from evalharness.errors import InputError

from .backward_plan import Schedule
from .chunked import token_stats_chunked
from .implementations import ENV_VAR, IMPLEMENTATIONS, implementation_from_env, triton_installed
from .reference import token_stats_reference
from .stats import IGNORE_INDEX, TokenStats, check_inputs

Implementation = Literal["auto", "triton", "chunked", "reference"]


@dataclass(frozen=True)
class AutoRule:
    """From `min_rows` rows up (until the next rule of the same device), `auto` on `device`
    runs `path`, training with backward `schedule` (see backward_plan)."""

    device: str
    min_rows: int
    path: str
    schedule: Schedule = "two-pass"


# What `auto` runs, per device type and row count N; a GPU measurement (benchmarks/scoring.py
# --device cuda, which times every path and both schedules) updates this table.
# - CUDA, forward: the fused kernel matched naive at D=4096, V=128256 on an H200 (17.8 ms vs
#   18.1 at N=8192) with 1/1100 of its memory; chunked ran at 2.4% of peak.
# - CUDA, backward: `two-pass` recomputes the logits twice (5 head-sized matmuls with the
#   forward) and needs only the gradients' own memory; `one-pass` does 4 but keeps a float32
#   [N, D] sum of the hidden gradient (+N*D*4 bytes: 128 MiB at N=8192, D=4096). Until a GPU
#   measures them, the split is the estimate: at N >= 16384 the fifth matmul costs more than
#   the extra buffer is worth (0.5 GiB at N=32768 next to a 1 GiB weight gradient).
# Devices without a row here (cpu, mps, ...) use the chunked path.
AUTO_RULES: tuple[AutoRule, ...] = (
    AutoRule("cuda", 0, "triton", "two-pass"),
    AutoRule("cuda", 16384, "triton", "one-pass"),
)


@dataclass(frozen=True)
class Choice:
    path: str
    schedule: Schedule = "two-pass"


def auto_choice(device: torch.device, n_rows: int, *, triton_available: bool) -> Choice:
    """The AUTO_RULES row for this device and N (the last whose min_rows <= N)."""
    rules = [r for r in AUTO_RULES if r.device == device.type and r.min_rows <= n_rows]
    if not rules:
        return Choice("chunked")
    rule = max(rules, key=lambda r: r.min_rows)
    if rule.path == "triton" and not triton_available:
        return Choice("chunked")
    return Choice(rule.path, rule.schedule)


def kernel_schedule(n_rows: int) -> Schedule:
    """The backward schedule the table gives the fused kernel for N rows (on CUDA, or under
    the interpreter when `triton` is asked for by name)."""
    rules = [r for r in AUTO_RULES if r.path == "triton" and r.min_rows <= n_rows]
    return max(rules, key=lambda r: r.min_rows).schedule if rules else "two-pass"


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_implementation(impl: str, device: torch.device, n_rows: int = 0) -> str:
    """The concrete path for `impl` on `device` (for `n_rows` rows), or an error saying why it
    cannot run.

    A bad `impl` argument is a ValueError (a caller's bug); a bad EVALHARNESS_SCORING_IMPL is
    an InputError naming the variable, since the user set it.
    """
    from_env = impl == "auto"
    if from_env:
        impl = implementation_from_env()
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown scoring implementation {impl!r}; choose from {IMPLEMENTATIONS}")
    if impl == "auto":
        return auto_choice(device, n_rows, triton_available=triton_installed()).path
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
    schedule: Schedule | None = None,
) -> TokenStats:
    """Log-probability of each target token under `softmax(hidden @ weight.T + bias)`.

    Optional outputs: per-token `entropy` of the policy distribution, and `kl` =
    KL(p_ref || p) per token when the reference's last hidden states and LM head are given
    (anchored SFT, distillation). `softcap` applies `c * tanh(z / c)` to both models' logits.
    Gradients flow to `hidden`, `weight` and `bias`; the reference side is a constant.
    `chunk_rows` tunes the chunked path, `blocks` the kernel's tiles (interpreted) and chunks,
    and `schedule` the kernel's backward (default: AUTO_RULES' choice for this N).
    """
    check_inputs(hidden, weight, targets, bias, ignore_index, ref_hidden, ref_weight, ref_bias)
    n_rows = hidden.shape[0]
    path = resolve_implementation(impl, hidden.device, n_rows)
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
    if schedule is None:
        schedule = kernel_schedule(n_rows)
    return token_stats_triton(
        hidden.to(dtype),
        weight.to(dtype),
        targets,
        bias,
        schedule=schedule,
        blocks=blocks,
        **options,
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
