"""Log-likelihood scoring for `HFBackend`: continuations scored from hidden states, in batches.

Logits are never made for the whole vocabulary at every position: the decoder's last hidden
states at the continuation positions go through the fused LM head (`kernels.causal_lm`), which
gives each target's log-probability and whether it was the argmax.

Every request of a call is scored together, whatever sample it came from: continuations that
share a context (multiple choice) are packed into one row that reads the context once
(`hf_score_rows`), and the rows go longest first in right-padded batches, so the matrix
multiplies run on full batches. The batch is `batch_size` rows, or with an automatic batch size
a token budget: fixed on the CPU, and on an accelerator as large as memory allows (halved and
retried when a batch runs out of memory, as lm-evaluation-harness's `auto` searches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from evalharness.backends.base import all_results
from evalharness.backends.context import fit_scored
from evalharness.backends.hf_score_rows import (
    Branch,
    ScoreRow,
    attention_window,
    batches,
    model_inputs,
    padded_inputs,
    plan_rows,
)
from evalharness.backends.prompts import PromptEncoder
from evalharness.engine.requests import ScoreRequest, ScoreResult

#: Padded tokens per forward under an automatic batch size on the CPU, where memory is rarely
#: the limit and bigger batches stop paying once the matrix multiplies are a few hundred rows.
AUTO_CPU_TOKENS = 4096
#: Where the search starts on an accelerator; each out-of-memory batch halves it.
AUTO_ACCELERATOR_TOKENS = 1 << 17
#: The search gives up (and the error stands) below this many tokens per forward.
AUTO_MIN_TOKENS = 256


class HFScoring:
    """`score` of `HFBackend`, which provides the model, tokenizer, prompt encoder, context
    limit, device placement and batch settings used here."""

    model: Any
    tokenizer: Any
    batch_size: int
    auto_batch: bool
    context_limit: int | None
    prompts: PromptEncoder

    _on_device: Callable[[Any], Any]
    #: Whether this model honours a packed row's 4-D mask; None until first checked.
    _packing: bool | None = None
    #: The automatic batch size's current token budget; None until first needed.
    _auto_tokens: int | None = None

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        limit = self.context_limit
        # The model reads all but the last token: limit + 1 tokens fit, as lm-eval counts.
        fitted = [
            (fit_scored(context, continuation, None if limit is None else limit + 1), continuation)
            for context, continuation in self.prompts.encode_scored_pairs(requests)
        ]
        scored = self.score_pairs([(context, tokens) for (context, _), tokens in fitted])
        return [
            replace(result, truncated=True) if cut else result
            for result, ((_, cut), _) in zip(scored, fitted, strict=True)
        ]

    def score_pairs(
        self, pairs: Sequence[tuple[list[int], list[int]]], *, pack: bool = True
    ) -> list[ScoreResult]:
        """Scores of (context, continuation) token ids that already fit the model, in order;
        `pack` False scores every pair in its own row, as lm-evaluation-harness lays them out."""
        shares_context = len({tuple(context) for context, _ in pairs}) < len(pairs)
        window = attention_window(self.model.config)
        pack = pack and shares_context and self._packing_works()
        rows = plan_rows(pairs, pack=pack, window=window)
        results: list[ScoreResult | None] = [None] * len(pairs)
        self._score_rows(rows, results, window)
        return all_results(results)

    # -- batches -------------------------------------------------------------------------
    def _score_rows(
        self, rows: list[ScoreRow], results: list[ScoreResult | None], window: int | None
    ) -> None:
        """Score `rows` (longest first) batch by batch into `results`; under an automatic
        batch size a batch that runs out of memory halves the budget and is tried again.
        `window`: the model's attention window (`attention_window`)."""
        done = 0
        while done < len(rows):
            max_rows, max_tokens = self._batch_limits()
            batch = next(
                batches(rows[done:], max_rows=max_rows, max_tokens=max_tokens, window=window)
            )
            try:
                self._score_batch(batch, results)
            except Exception as error:  # noqa: BLE001 - only memory errors are retried
                if not self._shrink_after(error):
                    raise
                continue
            done += len(batch)

    def _batch_limits(self) -> tuple[int | None, int | None]:
        """(rows, padded tokens) per forward: `batch_size` rows, or the automatic budget."""
        if not getattr(self, "auto_batch", False):
            return max(1, self.batch_size), None
        if self._auto_tokens is None:
            on_cpu = self._on_device_type() == "cpu"
            self._auto_tokens = AUTO_CPU_TOKENS if on_cpu else AUTO_ACCELERATOR_TOKENS
        return None, self._auto_tokens

    def _shrink_after(self, error: Exception) -> bool:
        """Halve the automatic budget after an out-of-memory error; False when that is not the
        error, the batch size is not automatic, or the budget is already at its floor."""
        import torch

        out_of_memory = isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error)
        if not (out_of_memory and getattr(self, "auto_batch", False)):
            return False
        if self._auto_tokens is None or self._auto_tokens // 2 < AUTO_MIN_TOKENS:
            return False
        self._auto_tokens //= 2
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True

    def _on_device_type(self) -> str:
        device = getattr(self.model, "device", None)
        return getattr(device, "type", "cpu")

    def _score_batch(self, batch: list[ScoreRow], results: list[ScoreResult | None]) -> None:
        """One forward over a padded batch; each branch's tokens read out through the LM head."""
        import torch

        pad = self.tokenizer.pad_token_id
        if any(row.packed for row in batch):
            inputs = model_inputs(batch, pad, self._mask_dtype())
        else:
            inputs = padded_inputs(batch, pad)
        rows, positions, targets, owners = [], [], [], []
        for number, row in enumerate(batch):
            for index, position, token in row.targets():
                rows.append(number)
                positions.append(position)
                targets.append(token)
                owners.append(index)
        with torch.inference_mode():
            # No KV cache: nothing is decoded after a scoring forward, and a cache would hold
            # every layer's keys and values for the whole batch until the forward ends.
            hidden = self._decoder()(
                **{name: self._on_device(value) for name, value in inputs.items()},
                use_cache=False,
            ).last_hidden_state
            stats = self._token_stats(hidden[rows, positions], targets)
            logprobs = stats.logprobs.double().cpu().tolist()
            greedy = stats.is_argmax.cpu().tolist()
        self._collect(batch, owners, logprobs, greedy, results)

    @staticmethod
    def _collect(
        batch: list[ScoreRow],
        owners: list[int],
        logprobs: list[float],
        greedy: list[bool],
        results: list[ScoreResult | None],
    ) -> None:
        """Per-token values summed per request (in float64: the order of a sum in float32
        would change the last digits with the batch layout)."""
        cursor = 0
        for row in batch:
            for branch in row.branches:
                n = len(branch.tokens)
                assert owners[cursor] == branch.index
                results[branch.index] = ScoreResult(
                    logprob=float(sum(logprobs[cursor : cursor + n])),
                    n_tokens=n,
                    is_greedy=all(greedy[cursor : cursor + n]),
                )
                cursor += n

    def _mask_dtype(self) -> Any:
        import torch

        dtype = getattr(self.model, "dtype", torch.float32)
        return dtype if dtype.is_floating_point else torch.float32

    # -- packing check -------------------------------------------------------------------
    def _packing_works(self) -> bool:
        """Whether this model reads a packed row as separate rows, checked once per backend.

        A model whose attention ignores a custom 4-D mask (or refuses position ids) would let
        one choice see another; a short synthetic row scored both ways tells, and such a model
        scores every continuation in its own row instead.
        """
        if self._packing is None:
            self._packing = self._packed_matches_unpacked()
        return self._packing

    def _packed_matches_unpacked(self) -> bool:
        vocab = int(getattr(self.model.config, "vocab_size", 0) or 0)
        if vocab < 64:
            return False
        context = [11, 12, 13, 14, 15, 16]
        branches = ([21, 22, 23, 24], [31, 32, 33], [41])
        packed = ScoreRow(context, tuple(Branch(i, b) for i, b in enumerate(branches)))
        alone = [ScoreRow(context, (Branch(i, b),)) for i, b in enumerate(branches)]
        together: list[ScoreResult | None] = [None] * len(branches)
        apart: list[ScoreResult | None] = [None] * len(branches)
        try:
            self._score_batch([packed], together)
            self._score_batch(alone, apart)
        except (TypeError, ValueError, RuntimeError, NotImplementedError):
            return False
        tolerance = 1e-3 if self._mask_dtype().itemsize >= 4 else 5e-2
        return all(
            abs(a.logprob - b.logprob) <= tolerance * max(1.0, abs(b.logprob))
            for a, b in zip(all_results(together), all_results(apart), strict=True)
        )

    # -- model pieces --------------------------------------------------------------------
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
