"""How scored continuations become padded batches of rows, for `HFScoring`.

A row is one context followed by one or more continuations ("branches"). Continuations that
share a context (the choices of a multiple-choice question) are packed into one row: the
context is read once, and each branch attends to the context and to its own earlier tokens
only, through a 4-D attention mask, with position ids that restart after the context for each
branch. Every branch then sees exactly the tokens it would see alone, so its log-probabilities
are the ones of an unpacked row, at the cost of one context instead of one per choice.

Rows are sorted longest first (as lm-evaluation-harness orders its requests, so a memory
problem shows on the first batch) and cut into padded batches by a row count, a token budget,
or both. Padding costs little because neighbours in that order have similar lengths.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

Pair = tuple[list[int], list[int]]


@dataclass(frozen=True)
class Branch:
    """One continuation scored in a row: the request it answers and its tokens."""

    index: int
    tokens: list[int]


@dataclass(frozen=True)
class ScoreRow:
    """A context and the continuations scored after it in one row of a batch."""

    context: list[int]
    branches: tuple[Branch, ...]

    @property
    def inputs(self) -> list[int]:
        """What the model reads: the context, then each branch but its last token (nothing
        after a continuation's last token is scored, so it is never an input)."""
        tokens = list(self.context)
        for branch in self.branches:
            tokens.extend(branch.tokens[:-1])
        return tokens

    @property
    def width(self) -> int:
        return len(self.context) + sum(len(b.tokens) - 1 for b in self.branches)

    @property
    def packed(self) -> bool:
        return len(self.branches) > 1

    def positions(self) -> list[int]:
        """Position ids: the context's, then each branch's as if it followed the context alone."""
        positions = list(range(len(self.context)))
        for branch in self.branches:
            positions.extend(range(len(self.context), len(self.context) + len(branch.tokens) - 1))
        return positions

    def targets(self) -> Iterator[tuple[int, int, int]]:
        """(request index, input position whose output predicts the token, token) for every
        continuation token: a branch's first token is predicted by the context's last one."""
        start = len(self.context)
        for branch in self.branches:
            for offset, token in enumerate(branch.tokens):
                reader = len(self.context) - 1 if offset == 0 else start + offset - 1
                yield branch.index, reader, token
            start += len(branch.tokens) - 1


def attention_window(config: Any) -> int | None:
    """How far back (in inputs, not position ids) some layer of the model stops attending: a
    sliding window (Mistral, Gemma 2 and 3, Phi-3), GPT-Neo's local layers, Llama 4's chunks.
    None when every layer reads the whole row.

    A model given a 4-D mask uses it as it is, window or not: a packed row no wider than the
    window is scored as its branches alone would be (none of them reaches past it either),
    a wider one would let its later branches read context their own row hides from them.
    """
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    windows = [
        getattr(config, "sliding_window", None),
        getattr(config, "attention_chunk_size", None),
    ]
    if "local" in (getattr(config, "attention_layers", None) or ()):
        windows.append(getattr(config, "window_size", None))
    sizes = [int(size) for size in windows if isinstance(size, int) and size > 0]
    return min(sizes, default=None)


def plan_rows(pairs: Sequence[Pair], *, pack: bool, window: int | None = None) -> list[ScoreRow]:
    """Rows for `pairs` (context, continuation), longest first; with `pack`, one row per
    distinct context (but one row per pair where that row would be wider than `window`, see
    `attention_window`), else one row per pair (the layout lm-evaluation-harness uses)."""
    if pack:
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, (context, _) in enumerate(pairs):
            groups[tuple(context)].append(index)
        rows = []
        for context, indices in groups.items():
            row = ScoreRow(list(context), tuple(Branch(i, pairs[i][1]) for i in indices))
            if window is not None and row.packed and row.width > window:
                rows.extend(ScoreRow(row.context, (branch,)) for branch in row.branches)
            else:
                rows.append(row)
    else:
        rows = [ScoreRow(c, (Branch(i, tokens),)) for i, (c, tokens) in enumerate(pairs)]
    return sorted(rows, key=lambda row: -row.width)


def batches(
    rows: Sequence[ScoreRow],
    *,
    max_rows: int | None,
    max_tokens: int | None,
    window: int | None = None,
) -> Iterator[list[ScoreRow]]:
    """Consecutive rows (sorted longest first) in batches of at most `max_rows` rows whose padded
    size (rows x longest width) stays within `max_tokens`; a row alone is always a batch. Rows
    wider than `window` never share a batch with narrower ones, which may be packed: the 4-D
    mask a packed row needs would replace the model's window for the whole batch."""
    batch: list[ScoreRow] = []
    for row in rows:
        width = max(row.width, batch[0].width) if batch else row.width
        too_many = max_rows is not None and len(batch) >= max_rows
        too_big = max_tokens is not None and (len(batch) + 1) * width > max_tokens
        crosses = window is not None and bool(batch) and batch[0].width > window >= row.width
        if batch and (too_many or too_big or crosses):
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def branch_mask(row: ScoreRow, width: int) -> Any:
    """Which inputs each input of `row` may attend to (True: it may), padded to `width`: the
    context causally, each branch to the context and its own earlier tokens; padding to the
    first input only (a query that attends to nothing gives NaN in some attention kernels)."""
    import torch

    segment = [0] * len(row.context)
    for number, branch in enumerate(row.branches, start=1):
        segment.extend([number] * (len(branch.tokens) - 1))
    seg = torch.tensor(segment)
    n = len(segment)
    causal = torch.ones((n, n), dtype=torch.bool).tril()
    same_or_context = (seg[None, :] == 0) | (seg[None, :] == seg[:, None])
    mask = torch.zeros((width, width), dtype=torch.bool)
    mask[:n, :n] = causal & same_or_context
    mask[n:, 0] = True
    return mask


def model_inputs(batch: Sequence[ScoreRow], pad_id: int, dtype: Any) -> dict[str, Any]:
    """Right-padded `input_ids`, `position_ids` and an additive 4-D `attention_mask` in `dtype`
    (0 where a query may attend, the dtype's minimum elsewhere), as eager and SDPA attention
    both accept it."""
    import torch

    width = max(row.width for row in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(batch), width), dtype=torch.long)
    allowed = torch.zeros((len(batch), 1, width, width), dtype=torch.bool)
    for number, row in enumerate(batch):
        input_ids[number, : row.width] = torch.tensor(row.inputs)
        position_ids[number, : row.width] = torch.tensor(row.positions())
        allowed[number, 0] = branch_mask(row, width)
    additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": additive}


def padded_inputs(batch: Sequence[ScoreRow], pad_id: int) -> dict[str, Any]:
    """Right-padded `input_ids` and a 2-D `attention_mask` for rows of one branch each: the
    model's own causal mask does the rest."""
    import torch

    width = max(row.width for row in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for number, row in enumerate(batch):
        input_ids[number, : row.width] = torch.tensor(row.inputs)
        attention[number, : row.width] = 1
    return {"input_ids": input_ids, "attention_mask": attention}
