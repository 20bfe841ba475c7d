"""Turning a judge item into chat messages: the project's jinja templates or FastChat's prompts.

Pairwise items carry the candidate and the baseline; each judging pass shows them as "A" and
"B" in one order, so the same rendering code serves both orders and both prompt sources.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from evalharness.engine.requests import Message
from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, read_jsonl

from .templates import render_messages

FASTCHAT = "fastchat"


def ordered_fields(fields: dict[str, Any], candidate_first: bool) -> dict[str, Any]:
    """answer_a_*/answer_b_* for one pass: the candidate is A when `candidate_first`."""
    view = dict(fields)
    for turn in (1, 2):
        candidate, baseline = fields.get(f"answer_{turn}"), fields.get(f"baseline_{turn}")
        first, second = (candidate, baseline) if candidate_first else (baseline, candidate)
        view[f"answer_a_{turn}"], view[f"answer_b_{turn}"] = first, second
    return view


def render(
    template: str, fields: dict[str, Any], mode: str, candidate_first: bool | None = None
) -> tuple[Message, ...]:
    if candidate_first is not None:
        fields = ordered_fields(fields, candidate_first)
    if template == FASTCHAT:
        return render_fastchat(fields)
    return render_messages(template, {**fields, "mode": mode})


#: The `{placeholders}` a FastChat `prompt_template` may use (those `render_fastchat` fills).
FASTCHAT_PLACEHOLDERS = (
    "question",
    "answer",
    "question_1",
    "question_2",
    "answer_1",
    "answer_2",
    "answer_a",
    "answer_b",
    "answer_a_1",
    "answer_b_1",
    "answer_a_2",
    "answer_b_2",
    "ref_answer_1",
    "ref_answer_2",
)


def render_fastchat(fields: dict[str, Any]) -> tuple[Message, ...]:
    """FastChat's own prompt record (from `judge_prompts.jsonl`) filled as FastChat fills it."""
    prompt = fields["fastchat_prompt"]
    reference = fields.get("reference") or [None, None]
    values = {
        "question": fields.get("question_1"),
        "answer": fields.get("answer_1"),
        "question_1": fields.get("question_1"),
        "question_2": fields.get("question_2"),
        "answer_1": fields.get("answer_1"),
        "answer_2": fields.get("answer_2"),
        "answer_a": fields.get("answer_a_1"),
        "answer_b": fields.get("answer_b_1"),
        "answer_a_1": fields.get("answer_a_1"),
        "answer_b_1": fields.get("answer_b_1"),
        "answer_a_2": fields.get("answer_a_2"),
        "answer_b_2": fields.get("answer_b_2"),
        "ref_answer_1": reference[0],
        "ref_answer_2": reference[1] if len(reference) > 1 else None,
    }
    try:
        user = prompt["prompt_template"].format(**values)
    except (KeyError, IndexError) as exc:
        raise InputError(
            f"FastChat judge prompt {prompt.get('name')!r}: unknown placeholder {exc}"
        ) from None
    return (Message("system", prompt["system_prompt"]), Message("user", user))


FASTCHAT_FIELDS = ("name", "type", "system_prompt", "prompt_template", "output_format")


def load_fastchat_prompts(path: Path) -> dict[str, dict[str, Any]]:
    """FastChat's `judge_prompts.jsonl`: prompt name -> record, checked field by field.

    Each `prompt_template` is parsed here, when the task starts, so a stray brace or an unknown
    `{placeholder}` is reported before any answer is generated, not when judging begins.
    """
    prompts = {}
    names = UniqueIds("prompt")
    for number, row in read_jsonl(path, "mt_bench.judge_prompts"):
        for field in FASTCHAT_FIELDS:
            if not isinstance(row.get(field), str):
                raise InputError(f"{path}:{number}: missing field {field!r}")
        names.add(f"{path}:{number}", row["name"])
        check_prompt_template(row["prompt_template"], f"{path}:{number}: prompt {row['name']!r}")
        prompts[row["name"]] = {k: row[k] for k in FASTCHAT_FIELDS}
    return prompts


def check_prompt_template(template: str, where: str) -> None:
    """An error at `where` unless `template.format(**values)` can fill every placeholder."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(
            f"{where}: field 'prompt_template' has unbalanced braces ({exc}); "
            "write a literal brace as {{ or }}"
        ) from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root not in FASTCHAT_PLACEHOLDERS:
            raise InputError(
                f"{where}: field 'prompt_template' has unknown placeholder {{{name}}}; "
                f"known: {', '.join(FASTCHAT_PLACEHOLDERS)}"
            )


def fastchat_prompt_name(protocol: str, turn: int, reference_guided: bool) -> str:
    """The prompt FastChat's llm_judge uses for this kind of verdict."""
    if protocol == "rating":
        name = "single-math-v1" if reference_guided else "single-v1"
    else:
        name = "pair-math-v1" if reference_guided else "pair-v2"
    return f"{name}-multi-turn" if turn == 2 else name
