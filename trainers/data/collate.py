"""Batching tokenised examples into padded tensors, packing SFT examples, re-pairing for KL terms.

Sequences are RIGHT padded (`attention_mask` 1 on real tokens, `labels` -100 on padding), which
is what training forwards want; prompts for generation are LEFT padded so every prompt ends at
the same column and generated tokens follow directly.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from evalharness.errors import InputError

from .examples import (
    EXAMPLE_TYPES,
    IGNORE_INDEX,
    PackedExample,
    PairwiseExample,
    RankingExample,
    SFTExample,
    TokenizedExample,
)
from .formats import check_format

Batch = dict[str, torch.Tensor]


def collate(
    examples: Sequence[TokenizedExample],
    data_format: str,
    pad_token_id: int | None,
    *,
    pad_to_multiple_of: int | None = None,
) -> Batch:
    """A batch of tensors for `data_format`:

    - sft / binary: `input_ids`, `attention_mask`, `labels` `[B, T]` (+ `label` `[B]` bool for
      binary; + `position_ids` when the examples are `PackedExample`s);
    - pairwise: the same keys over 2B rows, chosen rows first (row b) then rejected (row B + b),
      so the policy runs one forward; `margins` `[B]` (0 where a row gave none);
    - ranking: B*K rows, example-major (row b*K + k), and `rewards` `[B, K]`; every example in
      a batch must have the same K;
    - prompt: LEFT padded `prompt_ids` and `prompt_attention_mask` `[B, P]` for generation.

    `pad_to_multiple_of` rounds T (or P) up, which keeps tensor-core shapes on GPUs.
    """
    check_format(data_format)
    if not examples:
        raise ValueError("cannot collate an empty batch")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; give the tokenizer a pad token (often its eos)")
    _check_types(examples, data_format)
    pad = _Padder(pad_token_id, pad_to_multiple_of)
    if data_format == "prompt":
        return pad.prompts([e.prompt_ids for e in examples])
    if data_format == "pairwise":
        return _pairwise(examples, pad)
    if data_format == "ranking":
        return _ranking(examples, pad)
    batch = pad.sequences([(e.input_ids, e.labels) for e in examples])
    if isinstance(examples[0], PackedExample):
        batch["position_ids"] = pad.positions([e.position_ids for e in examples])
    if data_format == "binary":
        batch["label"] = torch.tensor([e.label for e in examples], dtype=torch.bool)
    return batch


def _check_types(examples: Sequence[TokenizedExample], data_format: str) -> None:
    """Examples of another format (or packed mixed with unpacked) are a loop bug: fail loudly."""
    wrong = [e for e in examples if not isinstance(e, EXAMPLE_TYPES[data_format])]
    if wrong:
        raise TypeError(f"{type(wrong[0]).__name__} in a {data_format!r} batch ({wrong[0].where})")
    if len({isinstance(e, PackedExample) for e in examples}) > 1:
        raise TypeError("a batch mixes packed and unpacked examples")


def _pairwise(examples: Sequence[PairwiseExample], pad: _Padder) -> Batch:
    chosen = [(e.chosen_input_ids, e.chosen_labels) for e in examples]
    rejected = [(e.rejected_input_ids, e.rejected_labels) for e in examples]
    batch = pad.sequences(chosen + rejected)
    margins = [0.0 if e.margin is None else e.margin for e in examples]
    batch["margins"] = torch.tensor(margins, dtype=torch.float32)
    return batch


def _ranking(examples: Sequence[RankingExample], pad: _Padder) -> Batch:
    sizes = {len(e.candidates) for e in examples}
    if len(sizes) > 1:
        first = examples[0]
        other = next(e for e in examples if len(e.candidates) != len(first.candidates))
        raise InputError(
            f"a ranking batch mixes K={len(first.candidates)} ({first.where}) and "
            f"K={len(other.candidates)} ({other.where}) candidates; batch rows with equal K"
        )
    batch = pad.sequences([candidate for e in examples for candidate in e.candidates])
    batch["rewards"] = torch.tensor([e.rewards for e in examples], dtype=torch.float32)
    return batch


class _Padder:
    """Right/left padding of ragged int lists into one tensor."""

    def __init__(self, pad_token_id: int, multiple: int | None) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = multiple

    def width(self, sequences: Sequence[Sequence[int]]) -> int:
        longest = max(len(s) for s in sequences)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        return longest

    def pad(
        self, sequences: Sequence[Sequence[int]], value: int, left: bool = False
    ) -> torch.Tensor:
        out = torch.full((len(sequences), self.width(sequences)), value, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            if sequence:
                values = torch.tensor(sequence, dtype=torch.long)
                if left:
                    out[row, out.shape[1] - len(sequence) :] = values
                else:
                    out[row, : len(sequence)] = values
        return out

    def mask(self, sequences: Sequence[Sequence[int]], left: bool = False) -> torch.Tensor:
        return self.pad([[1] * len(s) for s in sequences], 0, left=left)

    def sequences(self, pairs: Sequence[tuple[list[int], list[int]]]) -> Batch:
        ids = [input_ids for input_ids, _ in pairs]
        return {
            "input_ids": self.pad(ids, self.pad_token_id),
            "attention_mask": self.mask(ids),
            "labels": self.pad([labels for _, labels in pairs], IGNORE_INDEX),
        }

    def prompts(self, prompts: Sequence[list[int]]) -> Batch:
        return {
            "prompt_ids": self.pad(prompts, self.pad_token_id, left=True),
            "prompt_attention_mask": self.mask(prompts, left=True),
        }

    def positions(self, positions: Sequence[list[int]]) -> torch.Tensor:
        """Position ids, the padding tail numbered 0, 1, ... as one more (dummy) sequence, so
        position-id based sequence boundaries never join padding to a real example."""
        width = self.width(positions)
        rows = [list(p) + list(range(width - len(p))) for p in positions]
        return torch.tensor(rows, dtype=torch.long)


def pack_examples(examples: Sequence[SFTExample], max_length: int) -> list[PackedExample]:
    """Concatenate SFT examples into rows of at most `max_length` tokens (best-fit decreasing).

    `position_ids` restart at 0 for each packed example and the first label of each is -100
    (as transformers' `DataCollatorWithFlattening` does), so no token is trained to follow
    another example. Isolation between packed examples needs an attention implementation
    that takes sequence boundaries from `position_ids`: flash-attention varlen, which
    transformers uses for `flash_attention_2/3` only when no `attention_mask` is passed and
    the rows are flattened to one (`input_ids.view(1, -1)`, `position_ids.view(1, -1)`).
    Eager and SDPA attention, or passing `attention_mask`, let packed examples attend to the
    ones before them in the row; the loss masking above still holds, the context does not.
    """
    too_long = [e for e in examples if len(e.input_ids) > max_length]
    if too_long:
        raise ValueError(
            f"{too_long[0].where}: {len(too_long[0].input_ids)} tokens exceed the packing "
            f"length {max_length}; tokenise with max_length <= {max_length}"
        )
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), kept sorted
    for index in order:
        length = len(examples[index].input_ids)
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            bins.append([index])
            bisect.insort(free, (max_length - length, len(bins) - 1))
            continue
        space, chosen = free.pop(slot)
        bins[chosen].append(index)
        bisect.insort(free, (space - length, chosen))
    return [_pack([examples[i] for i in sorted(members)]) for members in bins]


def _pack(members: list[SFTExample]) -> PackedExample:
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in members:
        input_ids += example.input_ids
        labels += [IGNORE_INDEX] + example.labels[1:]
        positions += range(len(example.input_ids))
    return PackedExample(
        input_ids=input_ids,
        labels=labels,
        position_ids=positions,
        lengths=[len(e.input_ids) for e in members],
        where=", ".join(e.where for e in members),
        truncated=any(e.truncated for e in members),
    )


def mismatched_pairs(examples: Sequence[SFTExample], max_length: int) -> list[SFTExample]:
    """Each example's prompt with the previous example's completion (the first takes the last).

    KTO/BCO estimate their KL reference point from such unrelated pairs (TRL builds them the
    same way, shifting completions by one within the batch). Completions are cut from the
    right to fit `max_length`.
    """
    shifted = [examples[-1], *examples[:-1]]
    pairs = []
    for example, donor in zip(examples, shifted, strict=True):
        prompt = example.prompt_ids
        room = max_length - len(prompt)
        completion = donor.input_ids[donor.prompt_length :]
        labels = donor.labels[donor.prompt_length :]
        pairs.append(
            SFTExample(
                input_ids=prompt + completion[:room],
                labels=[IGNORE_INDEX] * len(prompt) + labels[:room],
                prompt_length=len(prompt),
                where=example.where,
                truncated=example.truncated or len(completion) > room,
            )
        )
    return pairs
