"""Tokenised examples, one dataclass per data format, holding plain lists of token ids.

Lists rather than tensors: examples are built once per dataset and batched many times in
different groupings (shuffles, packing), and `collate` decides padding per batch. Labels follow
the transformers convention: the token id where the loss is taken, `IGNORE_INDEX` (-100)
elsewhere (prompt tokens, chat-template markers of non-assistant turns, padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100


@dataclass(kw_only=True)
class TokenizedExample:
    """What every format's example shares: where its row came from and whether it was cut."""

    where: str
    truncated: bool


@dataclass(kw_only=True)
class SFTExample(TokenizedExample):
    """One sequence, prompt then completion: labels are -100 on the first `prompt_length`
    tokens. Keeping `prompt_length` lets the loop re-pair prompts with other completions (the
    KL term of KTO-style losses, see `mismatched_pairs`)."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.prompt_length]

    @property
    def completion_length(self) -> int:
        """Trained tokens (what length-normalised losses divide by)."""
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass(kw_only=True)
class BinaryExample(SFTExample):
    """An SFT-shaped example with binary feedback: `label` true means desirable (KTO/BCO)."""

    label: bool


@dataclass(kw_only=True)
class PairwiseExample(TokenizedExample):
    """One prompt with a chosen and a rejected completion, both sequences starting with the
    same `prompt_length` prompt tokens. `margin` is an optional preference strength."""

    chosen_input_ids: list[int]
    chosen_labels: list[int]
    rejected_input_ids: list[int]
    rejected_labels: list[int]
    prompt_length: int
    margin: float | None = None

    @property
    def prompt_ids(self) -> list[int]:
        return self.chosen_input_ids[: self.prompt_length]


@dataclass(kw_only=True)
class RankingExample(TokenizedExample):
    """One prompt with K candidate sequences `(input_ids, labels)` and their K rewards."""

    candidates: list[tuple[list[int], list[int]]]
    rewards: list[float]
    prompt_length: int


@dataclass(kw_only=True)
class PromptExample(TokenizedExample):
    """A prompt for online methods: `prompt_ids` to generate from (templated with the
    generation prompt when conversational), the original `prompt` for judges and reward
    functions, and the row's other fields in `extra` (e.g. a reference answer)."""

    prompt_ids: list[int]
    prompt: str | list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class PackedExample(TokenizedExample):
    """Several SFT examples concatenated into one row; `position_ids` restart at 0 for each
    (`lengths` lists their token counts in order). See `pack_examples` for the caveat on
    attention isolation."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    lengths: list[int]


#: The example classes each data format's rows tokenise to (`sft` rows may also be packed).
EXAMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "sft": (SFTExample, PackedExample),
    "binary": (BinaryExample,),
    "pairwise": (PairwiseExample,),
    "ranking": (RankingExample,),
    "prompt": (PromptExample,),
}
