"""Log-likelihood scoring for `HFBackend`: continuations scored from hidden states.

Logits are never made for the whole vocabulary at every position: the decoder's last hidden
states at the continuation positions go through the fused LM head (`kernels.causal_lm`), which
gives each target's log-probability and whether it was the argmax. Continuations that share a
context (multiple choice) run the context once and each continuation on its KV cache.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from evalharness.backends.base import all_results
from evalharness.backends.context import fit_scored
from evalharness.backends.prompts import PromptEncoder
from evalharness.engine.requests import ScoreRequest, ScoreResult


class HFScoring:
    """`score` of `HFBackend`, which provides the model, tokenizer, prompt encoder, context
    limit and device placement used here."""

    model: Any
    tokenizer: Any
    batch_size: int
    context_limit: int | None
    prompts: PromptEncoder

    _on_device: Callable[[Any], Any]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        limit = self.context_limit
        # The model reads all but the last token: limit + 1 tokens fit, as lm-eval counts.
        fitted = [
            (fit_scored(context, continuation, None if limit is None else limit + 1), continuation)
            for context, continuation in self.prompts.encode_scored_pairs(requests)
        ]
        pairs = [(context, continuation) for (context, _), continuation in fitted]
        by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, (context, _) in enumerate(pairs):
            by_context[tuple(context)].append(index)
        results: list[ScoreResult | None] = [None] * len(requests)
        singles = [ix[0] for ix in by_context.values() if len(ix) == 1]
        for start in range(0, len(singles), self.batch_size):
            chunk = singles[start : start + self.batch_size]
            for index, result in zip(
                chunk, self._score_full([pairs[i] for i in chunk]), strict=True
            ):
                results[index] = result
        for context, indices in by_context.items():
            if len(indices) > 1:
                shared = self._score_shared_context(list(context), [pairs[i][1] for i in indices])
                for index, result in zip(indices, shared, strict=True):
                    results[index] = result
        return [
            replace(result, truncated=True) if cut else result
            for result, ((_, cut), _) in zip(all_results(results), fitted, strict=True)
        ]

    def _decoder(self) -> Any:
        from evalharness.kernels.causal_lm import decoder_of

        return decoder_of(self.model)

    def _token_stats(self, hidden: Any, targets: Any) -> Any:
        """Target log-probs from last hidden states through the LM head, without full logits.

        The hidden states go to the head's device: under a device map the decoder ends on the
        last GPU, while the head (tied to the embeddings, or placed apart) may be on another.
        """
        import torch

        from evalharness.kernels.causal_lm import LMHead

        head = LMHead.of(self.model)
        hidden = hidden.to(head.weight.device)
        return head.stats(hidden, torch.as_tensor(targets, device=hidden.device))

    def _score_full(self, pairs: list[tuple[list[int], list[int]]]) -> list[ScoreResult]:
        """Right-padded batch of whole sequences; logits only at continuation positions.

        The last continuation token is never an input (nothing after it is scored), so a pair
        that fits the context by lm-eval's count (limit + 1 tokens) is never one position over.
        """
        import torch

        sequences = [c + t[:-1] for c, t in pairs]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        with torch.inference_mode():
            hidden = self._decoder()(
                input_ids=self._on_device(input_ids), attention_mask=self._on_device(attention)
            ).last_hidden_state
            rows, positions, targets = [], [], []
            for row, (context, continuation) in enumerate(pairs):
                for offset, token in enumerate(continuation):
                    rows.append(row)
                    positions.append(len(context) + offset - 1)
                    targets.append(token)
            stats = self._token_stats(hidden[rows, positions], targets)
        return self._collect(pairs, stats.logprobs, stats.is_argmax)

    def _score_shared_context(
        self, context: list[int], continuations: list[list[int]]
    ) -> list[ScoreResult]:
        """One forward pass over a shared context, then each continuation on its KV cache."""
        import torch
        from transformers import DynamicCache

        results = []
        with torch.inference_mode():
            cache = DynamicCache()
            out = self._decoder()(
                input_ids=self._on_device(torch.tensor([context])),
                past_key_values=cache,
                use_cache=True,
            )
            last_hidden = out.last_hidden_state[0, -1:]
            for continuation in continuations:
                hidden = last_hidden
                if len(continuation) > 1:
                    step = self._decoder()(
                        input_ids=self._on_device(torch.tensor([continuation[:-1]])),
                        past_key_values=cache,
                        use_cache=True,
                    )
                    hidden = torch.cat([last_hidden, step.last_hidden_state[0]], dim=0)
                    cache.crop(-(len(continuation) - 1))  # back to the shared context
                stats = self._token_stats(hidden, continuation)
                results.append(
                    ScoreResult(
                        logprob=float(stats.logprobs.sum()),
                        n_tokens=len(continuation),
                        is_greedy=bool(stats.is_argmax.all()),
                    )
                )
        return results

    @staticmethod
    def _collect(
        pairs: list[tuple[list[int], list[int]]], logprobs: Any, greedy: Any
    ) -> list[ScoreResult]:
        results, cursor = [], 0
        for _, continuation in pairs:
            n = len(continuation)
            results.append(
                ScoreResult(
                    logprob=float(logprobs[cursor : cursor + n].sum()),
                    n_tokens=n,
                    is_greedy=bool(greedy[cursor : cursor + n].all()),
                )
            )
            cursor += n
        return results
