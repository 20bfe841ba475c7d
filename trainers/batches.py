"""A run's data: rows read and split, tokenised examples, and the batches the loop feeds.

Reading and checking happen before any model loads (`read_splits`), so a bad file fails in
seconds; tokenising needs the model's tokenizer (`load_splits`). `Examples` batches one split
by index, so the data loader can shuffle indices while the reference's sums stay keyed by them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import torch

from evalharness.errors import InputError

from .config import TrainConfig
from .data import collate, load_rows, mismatched_pairs, pack_examples, tokenize_rows

log = logging.getLogger(__name__)

#: Methods whose loss is a token-level mean with no per-example reference: rows can be packed.
PACKABLE = {"sft", "dft"}


class Examples:
    """Tokenised examples of one split plus how to batch them (with indices, and KL rows)."""

    def __init__(
        self, examples: list[Any], data_format: str, pad_token_id: int, max_length: int
    ) -> None:
        self.examples = examples
        self.data_format = data_format
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self._mismatched: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: list[int], with_kl_rows: bool = False) -> dict[str, torch.Tensor]:
        batch = collate([self.examples[i] for i in indices], self.data_format, self.pad_token_id)
        batch["index"] = torch.tensor(indices)
        if with_kl_rows:
            batch.update(self._kl_rows(indices))
        return batch

    def in_order(self, size: int, with_kl_rows: bool = False) -> list[dict[str, torch.Tensor]]:
        """Batches covering every example once, in index order (reference sums, evaluation)."""
        starts = range(0, len(self), size)
        return [
            self.batch(list(range(start, min(start + size, len(self)))), with_kl_rows)
            for start in starts
        ]

    def _kl_rows(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """KTO's mismatched pairs: prompt of example i with the completion of example i-1.

        Pairing by dataset order (not by batch) keeps them fixed, so the reference's side can
        be precomputed and cached like every other reference quantity.
        """
        if self._mismatched is None:
            self._mismatched = mismatched_pairs(self.examples, self.max_length)
        rows = collate([self._mismatched[i] for i in indices], "sft", self.pad_token_id)
        return {f"kl_{key}": value for key, value in rows.items()}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device` (other values, such as lists, as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def tokenize(
    config: TrainConfig,
    rows: list[dict[str, Any]],
    data_format: str,
    tokenizer: Any,
    locations: list[str],
) -> list[Any]:
    """`rows` tokenised under the config's length limits, logging how many were truncated."""
    examples = tokenize_rows(
        rows,
        data_format,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        where=locations,
    )
    stats = examples.stats
    if stats.truncated_rows:
        log.info(
            "%d of %d rows truncated to %d tokens",
            stats.truncated_rows,
            stats.rows,
            config.max_length,
        )
    return list(examples)


@dataclass
class RowSplits:
    """Training and held-out rows (validated, not tokenised) with where each came from."""

    rows: list[dict[str, Any]]
    locations: list[str]
    eval_rows: list[dict[str, Any]]
    eval_locations: list[str]


def load_splits(
    config: TrainConfig, data_format: str, tokenizer: Any, splits: RowSplits | None = None
) -> tuple[list, list]:
    """Tokenised training and held-out examples (`splits` when already read, else read now)."""
    splits = splits or read_splits(config, data_format)
    train = tokenize(config, splits.rows, data_format, tokenizer, splits.locations)
    if config.pack:
        train = pack_examples(train, config.max_length)
    eval_rows, eval_locations = splits.eval_rows, splits.eval_locations
    held = tokenize(config, eval_rows, data_format, tokenizer, eval_locations) if eval_rows else []
    return train, held


def read_splits(config: TrainConfig, data_format: str) -> RowSplits:
    """Read and check the data before any model loads, so a bad file fails in seconds."""
    rows = load_rows(config.data, data_format, limit=config.limit)
    locations = list(rows.locations)
    eval_rows: list[dict[str, Any]] = []
    eval_locations: list[str] = []
    if config.eval_data:
        loaded = load_rows(config.eval_data, data_format)
        eval_rows, eval_locations = list(loaded), list(loaded.locations)
    elif config.eval_fraction > 0:
        order = list(range(len(rows)))
        random.Random(config.seed).shuffle(order)
        held_out = set(order[: max(1, int(len(rows) * config.eval_fraction))])
        eval_rows = [rows[i] for i in sorted(held_out)]
        eval_locations = [locations[i] for i in sorted(held_out)]
        keep = [i for i in range(len(rows)) if i not in held_out]
        rows, locations = [rows[i] for i in keep], [locations[i] for i in keep]
    if not rows:
        raise InputError(f"{config.data}: no training rows")
    if config.pack and config.method not in PACKABLE:
        raise InputError(
            f"packing works for {', '.join(sorted(PACKABLE))} (per-token losses without a "
            f"reference), not {config.method}"
        )
    return RowSplits(list(rows), list(locations), eval_rows, eval_locations)
