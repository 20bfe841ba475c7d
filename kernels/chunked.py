"""Chunked PyTorch log-probabilities: bounded memory, fp32 accumulation, batch-invariant rows."""

from __future__ import annotations

import torch


def token_logprobs_chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`log softmax(hidden @ weight.T + bias)[target]` for each row of `hidden`.

    Rows are processed `chunk_size` at a time in float32, so memory stays at
    `chunk_size x vocab` and every row's result is independent of the others in the batch.
    Returns `(logprobs [N] float32, is_argmax [N] bool)`; `is_argmax` says whether the target is
    the most likely token (what lm-evaluation-harness calls `is_greedy`).
    """
    if hidden.ndim != 2 or targets.ndim != 1 or hidden.shape[0] != targets.shape[0]:
        raise ValueError("hidden must be [N, D] and targets [N]")
    n_rows = hidden.shape[0]
    logprobs = torch.empty(n_rows, dtype=torch.float32, device=hidden.device)
    is_argmax = torch.empty(n_rows, dtype=torch.bool, device=hidden.device)
    weight32 = weight.float()
    bias32 = bias.float() if bias is not None else None
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        logits = hidden[start:stop].float() @ weight32.T
        if bias32 is not None:
            logits += bias32
        chunk_targets = targets[start:stop]
        target_logits = logits.gather(1, chunk_targets[:, None]).squeeze(1)
        logprobs[start:stop] = target_logits - torch.logsumexp(logits, dim=-1)
        is_argmax[start:stop] = target_logits >= logits.max(dim=-1).values
    return logprobs, is_argmax
