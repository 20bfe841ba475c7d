"""GKD: on-policy distillation from a teacher with the generalised Jensen–Shannon divergence.

Agarwal et al. 2024 ("On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes", ICLR 2024) as TRL's `GKDTrainer` defines it (TRL v1.9.0,
`trl/experimental/gkd/gkd_trainer.py`: `generalized_jsd_loss` l. 238-323, `compute_loss`
l. 398-428; `gkd_config.py` l. 55-110 for the options, their defaults and ranges).

Unlike every other method, the loss compares two full next-token distributions at each
completion position, so it needs the student's and the teacher's logits over the whole
vocabulary, `[B, T, V]`, not the fused kernel's per-token log-probs `[B, T]`. Those
distributions are the memory cost, and cannot be avoided without a fused kernel: the two
models' `[B, T, V]` logits and the student's gradient of them. Everything else is bounded: the
divergence is computed in blocks of `chunk_tokens` positions, each recomputed in the backward
pass (activation checkpointing), so its intermediates (two log-softmaxes, the mixture and the
KL terms, about six copies of a block) and the gradient pieces stay block-sized instead of
growing with B x T x V.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from evalharness.errors import InputError

from .options import check_range, describe
from .registry import register

Tensor = torch.Tensor

#: Positions per block: about 2^24 vocabulary entries (64 MiB of float32) per
#: intermediate, so a 150k vocabulary still gets ~110 positions at a time.
CHUNK_ELEMENTS = 1 << 24

REDUCTIONS = ("batchmean", "sum", "mean")


def check_beta(beta: float) -> None:
    """TRL's GKDConfig check: beta interpolates between the two KL ends, so it lies in [0, 1]."""
    if not 0.0 <= beta <= 1.0:
        raise InputError(f"gkd: beta={beta} must lie in [0, 1] (0 = KL, 1 = inverse KL)")


def _kl_div(input_log_probs: Tensor, target_log_probs: Tensor) -> Tensor:
    """`F.kl_div(input, target, reduction="none", log_target=True)`, as TRL calls it."""
    return F.kl_div(input_log_probs, target_log_probs, reduction="none", log_target=True)


def _chunk_divergence(
    student: Tensor, teacher: Tensor, positions: Tensor, beta: float, temperature: float
) -> Tensor:
    """Σ over the vocabulary of TRL's elementwise generalised JSD, at the rows `positions` `[n]`
    of a `[rows, V]` block of logits: `[n]`.

    The operations are TRL's, in TRL's order: temperature, log-softmax, `F.kl_div` with
    `log_target=True` (elementwise p_target·(log p_target − input)); at 0 < β < 1 the mixture
    log m = logsumexp(log p_S + log(1 − β), log p_T + log β) and β·KL(T‖m) + (1 − β)·KL(S‖m).
    The two ends are TRL's special cases, not that formula's limits: β = 0 is KL(T‖S) (forward
    KL) and β = 1 is KL(S‖T) (reverse KL).
    """
    student_log_probs = F.log_softmax(student.index_select(0, positions) / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher.index_select(0, positions) / temperature, dim=-1)
    if beta == 0:
        jsd = _kl_div(student_log_probs, teacher_log_probs)
    elif beta == 1:
        jsd = _kl_div(teacher_log_probs, student_log_probs)
    else:
        weight = torch.tensor(beta, dtype=student_log_probs.dtype, device=student_log_probs.device)
        mixture_log_probs = torch.logsumexp(
            torch.stack(
                [
                    student_log_probs + torch.log1p(-weight),
                    teacher_log_probs + torch.log(weight),
                ]
            ),
            dim=0,
        )
        kl_teacher = _kl_div(mixture_log_probs, teacher_log_probs)
        kl_student = _kl_div(mixture_log_probs, student_log_probs)
        jsd = weight * kl_teacher + (1 - weight) * kl_student
    return jsd.sum(dim=-1)


def token_divergences(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_tokens: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The generalised JSD summed over the vocabulary at every scored position.

    `student_logits`, `teacher_logits`: `[B, T, V]`; `mask`: `[B, T]` bool (None: every
    position). Returns `(values [N], positions [N])`, `positions` the flat indices b·T + t of
    the N scored positions in row-major order. The teacher's logits are taken as data (no
    gradient flows into them).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise InputError(
            f"gkd: student and teacher logits must both be [batch, tokens, vocabulary]; got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)} (a teacher with "
            "another vocabulary cannot be distilled token by token)"
        )
    check_beta(beta)
    check_range("temperature", temperature, 0.0, float("inf"), closed_low=False)
    vocabulary = student_logits.shape[-1]
    student = student_logits.reshape(-1, vocabulary)
    teacher = teacher_logits.detach().reshape(-1, vocabulary).to(student.dtype)
    if mask is None:
        positions = torch.arange(student.shape[0], device=student.device)
    else:
        positions = mask.reshape(-1).nonzero().squeeze(-1).to(student.device)
    size = chunk_tokens or max(1, CHUNK_ELEMENTS // vocabulary)
    recompute = torch.is_grad_enabled() and student.requires_grad
    # Blocks of rows by `split` (views), each scoring its own positions: the backward pass then
    # builds one block-sized gradient per block and `split` joins them once. Selecting from the
    # whole `[B*T, V]` tensor instead costs a zero-filled full-size gradient per chunk.
    blocks = student.split(size)
    counts = torch.bincount(positions // size, minlength=len(blocks)).tolist()
    parts = []
    pieces = zip(blocks, teacher.split(size), positions.split(counts), strict=True)
    for index, (student_block, teacher_block, block_positions) in enumerate(pieces):
        if block_positions.numel() == 0:
            continue
        local = block_positions - index * size
        arguments: tuple[Any, ...] = (student_block, teacher_block, local, beta, temperature)
        if recompute:
            parts.append(checkpoint(_chunk_divergence, *arguments, use_reentrant=False))
        else:
            parts.append(_chunk_divergence(*arguments))
    values = torch.cat(parts) if parts else student.new_zeros(0)
    return values, positions


def generalized_jsd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    *,
    chunk_tokens: int | None = None,
) -> Tensor:
    """TRL's `GKDTrainer.generalized_jsd_loss` (Eq. 1 of the GKD paper), computed in chunks.

    `labels` `[B, T]` marks ignored positions with -100 and is aligned with the logits (the
    caller shifts, as TRL's `compute_loss` does). Reductions as TRL's: `batchmean` divides the
    sum by the number of scored positions (at least 1; by B when no labels are given), so it is
    the mean per-token divergence; `mean` divides by positions x vocabulary (PyTorch's
    elementwise mean); `sum` does not divide. TRL's `none` (the elementwise `[N, V]` tensor) is
    not offered: keeping it would undo the chunking.
    """
    if reduction not in REDUCTIONS:
        raise InputError(f"gkd: reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
    mask = None if labels is None else labels != -100
    values, positions = token_divergences(
        student_logits,
        teacher_logits,
        mask,
        beta=beta,
        temperature=temperature,
        chunk_tokens=chunk_tokens,
    )
    total = values.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = positions.numel() * student_logits.shape[-1]
        return total / count  # NaN on an empty selection, as torch's mean of nothing
    denominator = positions.numel() if labels is not None else student_logits.shape[0]
    return total / max(denominator, 1)


def _probability(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise InputError(f"lmbda={number} must lie in [0, 1]")
    return number


describe(
    "lmbda",
    "gkd: probability that a step trains on the student's own samples (on-policy) instead of "
    "the dataset's completions",
    _probability,
)
describe(
    "seq_kd",
    "gkd: when a step does not sample the student, train on the teacher's samples (sequence-"
    "level KD) instead of the dataset's completions",
)


def _teacher_spec(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"teacher={value!r} must be a model spec such as hf:DIR")
    return value.strip()


describe(
    "teacher",
    "gkd: the teacher model spec (hf:DIR, a hub id); same vocabulary as the student",
    _teacher_spec,
)


@register(
    "gkd",
    data="sft",
    reference=False,
    summary="GKD: generalised JSD(β) between student and teacher over the full vocabulary, on "
    "student samples w.p. lmbda",
)
def gkd(
    *,
    student_logits: Tensor,
    teacher_logits: Tensor,
    token_mask: Tensor,
    lmbda: float = 0.5,
    beta: float = 0.5,
    temperature: float = 0.9,
    seq_kd: bool = False,
    teacher: str | None = None,
) -> Tensor:
    """GKD's loss as TRL's `compute_loss` takes it: rows `[B]` whose mean is the batchmean JSD.

    The options are GKDConfig's, with its defaults. `lmbda`, `seq_kd`, `teacher` and
    `temperature` choose where the completions come from and are read by the loop: TRL's
    `temperature` (0.9) is the sampling temperature, and its `compute_loss` calls
    `generalized_jsd_loss` without one, so the divergence is taken at temperature 1 here too.
    Row b is its positions' summed divergence x B / N (N scored positions in the batch), so
    the batch mean is TRL's batchmean: a long completion weighs in proportion to its length.
    """
    del lmbda, seq_kd, teacher, temperature  # the loop's: see the docstring
    values, positions = token_divergences(student_logits, teacher_logits, token_mask, beta=beta)
    rows = student_logits.shape[0]
    width = student_logits.shape[1]
    row_sums = values.new_zeros(rows).index_add(0, positions // width, values)
    return row_sums * (rows / max(positions.numel(), 1))
