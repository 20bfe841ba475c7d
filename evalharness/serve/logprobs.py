"""Log-probabilities of given tokens, and their likeliest alternatives, for the served model.

The OpenAI API's `logprobs` (chat) and `echo` + `logprobs` (completions, lm-eval's
`local-completions` scoring) need the probability of tokens the client already has. The
chosen tokens go through the same fused LM head `HFBackend.score` uses, so a served echo score
equals a local one; alternatives need logits, made in bounded float32 blocks so memory stays
flat for any vocabulary. `ModelWorker` batches the requests and calls `batch_logprobs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.backends.hf import HFBackend
from evalharness.backends.local_model import input_device

#: Float32 logits held at once for top-k alternatives (32 MiB, the chunked scoring path's
#: budget): memory stays bounded for any vocabulary.
LOGIT_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability given its prefix, and the most likely alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def batch_logprobs(
    backend: HFBackend, sequences: Sequence[tuple[list[int], int]], top_k: int
) -> list[list[TokenLogprob]]:
    """Per sequence `(ids, start)`, the log-probabilities of `ids[start:]` in one forward pass.

    Rows are right-padded and masked, so each row's tokens see only their own prefix, and go
    to the model's device. Without alternatives the chosen tokens are scored by the fused head
    `HFBackend.score` uses (`LMHead.stats`: the Triton kernel on CUDA), so a served echo score
    equals the local score. With `top_k` alternatives, logits are needed: they are made in
    bounded float32 blocks (`head_logprobs`), never `[rows, vocab]` at once.
    """
    import torch

    from evalharness.kernels.causal_lm import LMHead, decoder_of

    model = backend.model
    head = LMHead.of(model)
    device = input_device(model)
    width = max(len(ids) for ids, _ in sequences)
    pad = backend.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, _) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
    results: list[list[TokenLogprob]] = []
    with torch.inference_mode():
        hidden = decoder_of(model)(
            input_ids=input_ids.to(device), attention_mask=attention.to(device)
        ).last_hidden_state
        # Under a device map the decoder ends on the last GPU; the head may be on another.
        hidden = hidden.to(head.weight.device)
        for row, (ids, start) in enumerate(sequences):
            predicting = hidden[row, start - 1 : len(ids) - 1]
            targets = ids[start:]
            target_ids = torch.tensor(targets, device=hidden.device)
            if top_k > 0:
                chosen, tops = head_logprobs(head, predicting, target_ids, top_k)
            else:
                chosen = head.stats(predicting, target_ids).logprobs.tolist()
                tops = [() for _ in targets]
            results.append(
                [
                    TokenLogprob(token_id=t, logprob=lp, top=top)
                    for t, lp, top in zip(targets, chosen, tops, strict=True)
                ]
            )
    return results


def head_logprobs(
    head: Any, hidden: Any, targets: Any, top_k: int
) -> tuple[list[float], list[tuple[tuple[int, float], ...]]]:
    """Each row's target log-probability and its `top_k` most likely tokens (descending), as
    `LMHead` scores them (hidden scale, bias, soft cap), in float32.

    The vocabulary is walked in blocks holding at most `LOGIT_ELEMENTS` float32 logits, with a
    running log-sum-exp and a running top-k: the head's weight stays in the model's dtype and
    only one block of it is upcast at a time (bf16 products are exact in float32, so this is
    the fused kernel's float32 accumulation), and no `[rows, vocab]` logits exist.
    """
    import torch

    vocab = head.weight.shape[0]
    k = min(top_k, vocab)
    # Rows per pass, and vocabulary entries per block: the block's logits and its upcast
    # weight each stay within the budget.
    step = max(1, min(hidden.shape[0], LOGIT_ELEMENTS // min(vocab, 1024)))
    width = max(1, min(LOGIT_ELEMENTS // step, LOGIT_ELEMENTS // hidden.shape[1]))
    chosen: list[float] = []
    tops: list[tuple[tuple[int, float], ...]] = []
    for first_row in range(0, hidden.shape[0], step):
        rows = hidden[first_row : first_row + step].float() * head.hidden_scale
        wanted = targets[first_row : first_row + step]
        n = rows.shape[0]
        running_max = torch.full((n,), -torch.inf, device=rows.device)
        running_sum = torch.zeros(n, device=rows.device)
        target_logit = torch.zeros(n, device=rows.device)
        top_values = torch.empty(n, 0, device=rows.device)
        top_ids = torch.empty(n, 0, dtype=torch.long, device=rows.device)
        for first in range(0, vocab, width):
            logits = rows @ head.weight[first : first + width].float().T
            if head.bias is not None:
                logits += head.bias[first : first + width].float() * head.hidden_scale
            if head.softcap is not None:
                logits.div_(head.softcap).tanh_().mul_(head.softcap)
            block_max = torch.maximum(running_max, logits.max(dim=-1).values)
            running_sum = running_sum * torch.exp(running_max - block_max) + torch.exp(
                logits - block_max[:, None]
            ).sum(dim=-1)
            running_max = block_max
            inside = (wanted >= first) & (wanted < first + logits.shape[1])
            target_logit[inside] = logits[inside, wanted[inside] - first]
            values, ids = logits.topk(min(k, logits.shape[1]), dim=-1)
            top_values, order = torch.cat([top_values, values], dim=1).topk(
                min(k, top_values.shape[1] + values.shape[1]), dim=-1
            )
            top_ids = torch.cat([top_ids, ids + first], dim=1).gather(1, order)
        normaliser = running_max + torch.log(running_sum)
        chosen += (target_logit - normaliser).tolist()
        tops += [
            tuple(zip(i, v, strict=True))
            for i, v in zip(
                top_ids.tolist(), (top_values - normaliser[:, None]).tolist(), strict=True
            )
        ]
    return chosen, tops
