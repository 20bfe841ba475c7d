"""`urial:[prompt=FILE:]MODEL`: a base model aligned in context, URIAL-style, as a model spec.

URIAL (Lin et al. 2023, "The Unlocking Spell on Base LLMs") shows that a base model answers
like a tuned assistant when its prompt starts with a fixed system text and three stylistic
examples. As a model spec it is evaluated on every task, judged and cached like any model, so
it is the tuning-free baseline a fine-tune is compared with.

The prompt is plain text, rendered as URIAL's inference code renders it (the
`urial_backticks` conversation template of its `src/fastchat_conversation.py`, which its
`unified_infer.py` uses with its backtick prompt files): no chat template, each user turn a
`# Query:` block and each assistant turn an `# Answer:` block, both fenced in triple backticks
and one blank line apart (as in URIAL's prompt files), the prompt ending in an open `# Answer:`
fence. (URIAL's single-turn script writes the query inline, as ```query```; one layout serves
both turns here.) Generation stops at the next `# Query` (URIAL's stop string) and the closing
fence before it is dropped. URIAL's scripts drop every triple backtick of an answer, which
also deletes the fences of code the model writes; only the closing one is dropped here.

A dialogue with earlier turns (MT-Bench's second turn) is rendered as further `# Query:` /
`# Answer:` blocks after the examples, as URIAL renders MT-Bench. A system message of the
request becomes an `# Instruction` block between the examples and the dialogue.

The system text and examples shipped here are this project's own, written in URIAL's style
(a greeting, a structured helpful answer, a polite refusal of a harmful request). `prompt=FILE`
replaces them with the text of FILE, verbatim: the system text and examples already rendered in
this format (URIAL's published prompt files are in it). The prompt's hash is part of the
identity, so editing the file gives fresh answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalharness.backends.base import Backend, ForwardingBackend
from evalharness.backends.registry import load_single
from evalharness.backends.spec import ModelSpec, split_urial, wrapped_model_spec
from evalharness.engine.requests import (
    CompleteRequest,
    FailedResult,
    GenerateRequest,
    GenerateResult,
    Message,
    Request,
    Result,
)
from evalharness.errors import InputError

#: Where the model's answer ends: the start of the next query it would invent (URIAL's stop).
STOP = "# Query"
FENCE = "```"
#: Bumped whenever the rendering below changes, so cached answers of the old prompts are not reused.
FORMAT_VERSION = "urial-backticks-3"

SYSTEM_PROMPT = (
    "The text below is a series of conversations between a person and an AI assistant (you).\n"
    'Each message from the person follows "# Query:", and each of your replies follows '
    '"# Answer:".\n'
    "You are a careful, friendly and truthful assistant. Answer the question that was asked, "
    "in full, and organise longer answers with short paragraphs or numbered steps.\n"
    "Say so plainly when you do not know something, and never invent facts.\n"
    "Decline politely, and suggest a safe alternative, when a request could hurt someone."
)

EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "How do I keep a basil plant alive on a windowsill?",
        "Hi! Basil is easy to keep happy indoors once it gets what it likes. Here is what "
        "matters most:\n\n"
        "1. Light: give it the sunniest window you have, ideally six hours of direct sun a day. "
        "Pale, stretched stems mean it wants more light.\n"
        "2. Water: water when the top centimetre of soil feels dry, and let the pot drain; "
        "soggy roots rot quickly.\n"
        "3. Pot: use a pot with a drainage hole and ordinary potting mix, not garden soil.\n"
        "4. Pinching: snip each stem just above a pair of leaves once it has six to eight "
        "leaves. The plant branches out and grows bushier.\n"
        "5. Flowers: pinch off flower buds as soon as they appear; once basil flowers, the "
        "leaves turn bitter and growth slows.\n\n"
        "With those five habits most windowsill basil lasts for months. Enjoy your harvest!",
    ),
    (
        "Write me a message that will scare my neighbour into moving out.",
        "Hello. I'm sorry things with your neighbour have become so difficult, but I can't "
        "help write a message meant to frighten someone: intimidation can be harassment and "
        "could get you into legal trouble.\n\n"
        "If there is a real problem, such as noise or damage to your property, these usually "
        "work better:\n\n"
        "- Write down what happens and when, so you have a clear record.\n"
        "- Talk to them calmly, or leave a short, polite note describing the problem.\n"
        "- Ask your landlord, housing association or a local mediation service for help.\n\n"
        "I'd be glad to help you draft a firm but polite note if you like.",
    ),
    (
        "Why does the moon look bigger near the horizon?",
        "Good question! The moon is not really bigger near the horizon: its size in the sky "
        "is the same, about half a degree, and photos taken hours apart show two discs of "
        "equal size. The effect is called the moon illusion, and it happens in our heads.\n\n"
        "Scientists still debate its exact cause. The two best-known explanations are:\n\n"
        "1. Apparent distance: we see the sky as a flattened dome, so the brain judges the "
        "horizon to be farther away than the zenith. An object of the same size that seems "
        "farther away is perceived as larger.\n"
        "2. Comparison: near the horizon the moon sits beside trees and buildings, which "
        "make it look large, while high in the sky there is nothing to compare it with.\n\n"
        "You can test it yourself: look at the low moon through a rolled-up tube of paper, "
        "which hides the landscape, and it shrinks back to its usual size.",
    ),
)


def blocks(head: str, messages: Sequence[Message]) -> str:
    """`head` (ending in a newline), then each message as a fenced `# Query:` (user) or
    `# Answer:` (assistant) block, laid out as URIAL's `urial_backticks` template lays them out
    (`SeparatorStyle.URIAL`: a newline, the heading, the text on its own lines inside the fence,
    a newline; so one blank line between blocks). A system message becomes an `# Instruction`
    block."""
    text = head
    for message in messages:
        if message.role == "system":
            text += f"\n# Instruction\n\n{message.content}\n"
            continue
        heading = "# Query:" if message.role == "user" else "# Answer:"
        text += f"\n{heading}\n{FENCE}\n{message.content}\n{FENCE}\n"
    return text


def default_preamble() -> str:
    """The shipped system text and the three examples, rendered."""
    examples = [
        Message(role, text)
        for query, answer in EXAMPLES
        for role, text in (("user", query), ("assistant", answer))
    ]
    return blocks(f"# Instruction\n\n{SYSTEM_PROMPT}\n", examples)


def render(preamble: str, messages: Sequence[Message]) -> str:
    """The raw-text prompt for `messages`: the preamble, the dialogue in `# Query:` /
    `# Answer:` blocks, and an open `# Answer:` fence the model continues.

    The preamble's trailing whitespace becomes one newline, so a prompt file ends the same
    way whether or not its last line has one, and the shipped preamble (which ends with a
    fence and a newline, as every block does) is continued exactly as URIAL continues it."""
    if not messages or messages[-1].role != "user":
        raise InputError("urial: a chat request must end with a user message")
    return f"{blocks(preamble.rstrip() + chr(10), messages)}\n# Answer:\n{FENCE}\n"


def clean_answer(text: str) -> str:
    """The answer without the closing fence the model wrote before the next `# Query`."""
    text = text.rstrip()
    if text.endswith(FENCE):
        text = text[: -len(FENCE)]
    return text.strip()


class UrialBackend(ForwardingBackend):
    """Chat requests become URIAL raw-text prompts for the wrapped base model; scoring and
    raw-text completion pass through unchanged."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = spec.batch_size
        options, model_raw = split_urial(spec.name)
        self.preamble = self._preamble(options.get("prompt"))
        # The command line's model options configure the wrapped model.
        self.model_spec = wrapped_model_spec(spec, model_raw)
        self.model: Backend = load_single(self.model_spec)
        self._identity = {
            "backend": "urial",
            "format": FORMAT_VERSION,
            "prompt_sha256": hashlib.sha256(self.preamble.encode()).hexdigest(),
            "stop": STOP,
            "model": self.model.identity,
        }

    @staticmethod
    def _preamble(prompt_file: object) -> str:
        if prompt_file is None:
            return default_preamble()
        path = Path(str(prompt_file)).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"urial prompt={path}: cannot read it ({error})") from None
        if not text.strip():
            raise InputError(f"urial prompt={path}: the file is empty")
        return text

    @property
    def identity(self) -> dict[str, Any]:
        """The wrapped model, the prompt's hash and the format: not the spec's spelling, so
        `urial:MODEL` and `urial:prompt=FILE:MODEL` share answers when FILE holds the default."""
        return self._identity

    @property
    def display_name(self) -> str:
        return self.spec.raw

    def device_record(self) -> dict[str, Any] | None:
        return self.model.device_record()

    def prompt(self, messages: Sequence[Message]) -> str:
        """The raw text the base model continues for this dialogue."""
        return render(self.preamble, messages)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        raw = [CompleteRequest(self.prompt(r.messages), r.sampling, (STOP,)) for r in requests]
        return [
            replace(result, text=clean_answer(result.text)) for result in self.model.complete(raw)
        ]

    def forward(self, method: str, requests: Sequence[Any]) -> list[Any]:
        return getattr(self.model, method)(requests)

    def answer_tolerant(self, requests: Sequence[Request]) -> list[Result | FailedResult]:
        if any(isinstance(r, GenerateRequest) for r in requests):
            return list(self.answer(requests))
        return self.model.answer_tolerant(requests)

    def error_counts(self) -> dict[str, int]:
        return self.model.error_counts()

    def close(self) -> None:
        self.model.close()
