"""Validating rows of every data format and bringing them to one canonical shape.

Rows come from user files and hub datasets in TRL's dataset formats
(https://huggingface.co/docs/trl/dataset_formats). Every problem is an `InputError` of one line
naming where the row came from (`file:line`, `dataset[index]`) and the field, so a bad row in a
100k-row file is found without a debugger. Normalising is idempotent: `tokenize_rows` re-runs it
on rows that `load_rows` already normalised, so hand-built rows get the same checks.
"""

from __future__ import annotations

import math
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import require
from evalharness.trainers.losses.registry import DATA_FORMATS

Row = dict[str, Any]
Conversation = list[dict[str, Any]]

#: Where Anthropic HH-RLHF style dialogues hand over to the assistant; implicit prompts of plain
#: string preference pairs end with it, so completions start with " <answer>".
ASSISTANT_MARKER = "\n\nAssistant:"


def check_format(data_format: str) -> str:
    """`data_format`, or an error listing the known ones (a typo should not reach tokenising)."""
    if data_format not in DATA_FORMATS:
        known = ", ".join(DATA_FORMATS)
        raise InputError(f"unknown data format {data_format!r}; known formats: {known}")
    return data_format


def normalize_row(row: Row, data_format: str, where: str) -> Row:
    """A validated copy of `row` in its format's canonical fields; extra fields are kept.

    Canonical shapes: sft `{text}` | `{prompt, completion}` | `{messages}`; pairwise
    `{prompt, chosen, rejected[, margin]}` (an implicit prompt is extracted); binary
    `{prompt, completion, label}`; ranking `{prompt, completions, rewards}`; prompt `{prompt}`.
    Text fields are either all strings or all conversations within one row.
    """
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object with the {data_format} fields")
    normalizers = {
        "sft": _normalize_sft,
        "pairwise": _normalize_pairwise,
        "binary": _normalize_binary,
        "ranking": _normalize_ranking,
        "prompt": _normalize_prompt,
    }
    return normalizers[check_format(data_format)](dict(row), where)


def is_conversation(value: Any) -> bool:
    """Whether a (validated) text field holds chat messages rather than a plain string."""
    return isinstance(value, list)


def _normalize_sft(row: Row, where: str) -> Row:
    if row.get("messages") is not None:
        messages = _conversation(where, row, "messages")
        if messages[-1]["role"] != "assistant":
            raise InputError(f"{where}: field 'messages' must end with an assistant turn")
        return row
    if row.get("completion") is not None or row.get("prompt") is not None:
        _same_kind(where, row, ("prompt", "completion"))
        return row
    if row.get("text") is not None:
        require(where, row, "text", str)
        return row
    raise InputError(
        f"{where}: missing field 'messages', 'prompt'+'completion' or 'text' (sft format)"
    )


def _normalize_pairwise(row: Row, where: str) -> Row:
    if row.get("prompt") is None or _string_prompt_over_dialogues(row):
        _same_kind(where, row, ("chosen", "rejected"))
        row.update(extract_prompt(row["chosen"], row["rejected"], where))
    _same_kind(where, row, ("prompt", "chosen", "rejected"))
    if row.get("margin") is not None:
        row["margin"] = _number(where, row["margin"], "'margin'")
    return row


def _string_prompt_over_dialogues(row: Row) -> bool:
    """A string prompt next to full chosen/rejected conversations (as in
    HuggingFaceH4/ultrafeedback_binarized): the dialogues carry the prompt themselves, so it
    is extracted from them, as TRL's `maybe_extract_prompt` does."""
    return isinstance(row.get("prompt"), str) and all(
        is_conversation(row.get(field)) for field in ("chosen", "rejected")
    )


def _normalize_binary(row: Row, where: str) -> Row:
    _same_kind(where, row, ("prompt", "completion"))
    label = require(where, row, "label")
    if not isinstance(label, bool):
        raise InputError(
            f"{where}: field 'label' must be a bool (true/false), got {type(label).__name__}"
        )
    return row


def _normalize_ranking(row: Row, where: str) -> Row:
    prompt = _text_or_conversation(where, row, "prompt")
    completions = require(where, row, "completions", list)
    if len(completions) < 2:
        raise InputError(f"{where}: field 'completions' needs at least 2 candidates")
    for index, completion in enumerate(completions):
        _check_value(where, completion, f"'completions'[{index}]", like=prompt)
    rewards = require(where, row, "rewards", list)
    if len(rewards) != len(completions):
        raise InputError(
            f"{where}: field 'rewards' has {len(rewards)} values "
            f"but 'completions' has {len(completions)}"
        )
    row["rewards"] = [_number(where, r, f"'rewards'[{i}]") for i, r in enumerate(rewards)]
    return row


def _normalize_prompt(row: Row, where: str) -> Row:
    _text_or_conversation(where, row, "prompt")
    return row


def extract_prompt(chosen: Any, rejected: Any, where: str) -> Row:
    """Split two full dialogues into their shared prompt and the two differing completions.

    Like TRL's `extract_prompt`, but the cut lands on a turn boundary. Conversations: the
    longest common run of messages after which both continue with an assistant turn. Strings:
    the common prefix up to its last "\\n\\nAssistant:" (HH-RLHF), so the prompt ends with
    "Assistant:" and completions start with " ..."; strings without that marker are cut at the
    last whitespace of the common prefix (TRL's standard implicit-prompt rows). Always
    `prompt + chosen == original chosen`, and likewise for rejected.
    """
    if is_conversation(chosen):
        cut = _conversation_cut(chosen, rejected)
    else:
        cut = _string_cut(chosen, rejected)
    if cut <= 0:
        raise InputError(
            f"{where}: fields 'chosen' and 'rejected' share no prompt ending at a turn boundary; "
            "add a 'prompt' field"
        )
    return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def _conversation_cut(chosen: Conversation, rejected: Conversation) -> int:
    cut = 0
    while cut < min(len(chosen), len(rejected)) and chosen[cut] == rejected[cut]:
        cut += 1
    # Back off until both sides continue with an assistant turn (the completion's first turn).
    while cut > 0 and not all(
        cut < len(side) and side[cut]["role"] == "assistant" for side in (chosen, rejected)
    ):
        cut -= 1
    return cut


def _string_cut(chosen: str, rejected: str) -> int:
    common = 0
    limit = min(len(chosen), len(rejected))
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    prefix = chosen[:common]
    marker = prefix.rfind(ASSISTANT_MARKER)
    if marker >= 0:
        return marker + len(ASSISTANT_MARKER)
    return max((i for i, ch in enumerate(prefix) if ch.isspace()), default=0)


def _same_kind(where: str, row: Row, fields: tuple[str, ...]) -> None:
    """Every field present and valid, and all plain strings or all conversations."""
    first = _text_or_conversation(where, row, fields[0])
    for field in fields[1:]:
        value = require(where, row, field)
        _check_value(where, value, f"'{field}'", like=first, like_name=f"'{fields[0]}'")


def _text_or_conversation(where: str, row: Row, field: str) -> str | Conversation:
    value = require(where, row, field)
    _check_value(where, value, f"'{field}'")
    return value


def _check_value(
    where: str, value: Any, shown: str, like: Any = None, like_name: str = "the prompt"
) -> None:
    """`value` is a string or a conversation, of the same kind as `like` when given.

    `shown` names the field as messages print it: "'prompt'" or "'completions'[2]".
    """
    if value is None:
        raise InputError(f"{where}: missing field {shown}")
    if like is not None and is_conversation(like) != is_conversation(value):
        kind = "a list of messages" if is_conversation(like) else "a string"
        raise InputError(f"{where}: field {shown} must be {kind} like {like_name}")
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise InputError(
            f"{where}: field {shown} must be a string or a list of messages, "
            f"got {type(value).__name__}"
        )
    _check_messages(where, value, shown)


def _conversation(where: str, row: Row, field: str) -> Conversation:
    value = require(where, row, field, list)
    _check_messages(where, value, f"'{field}'")
    return value


def _check_messages(where: str, messages: list[Any], shown: str) -> None:
    if not messages:
        raise InputError(f"{where}: field {shown} is an empty list of messages")
    for index, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise InputError(
                f"{where}: field {shown}[{index}] must be a message with string 'role' and "
                "'content'"
            )


def _number(where: str, value: Any, shown: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{where}: field {shown} must be a finite number, got {value!r}")
    return float(value)
