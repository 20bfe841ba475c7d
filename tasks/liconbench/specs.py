"""What each LongICLBench dataset looks like in a prompt, and which metric scores it.

A prompt is raw completion text (no chat template), the same for every dataset:

    {instruction}
    The examples are as follows:
    {field}: {text}              <- one block per demonstration
    {label cue}{label}
    ...
    {field}: {query text}
    {label cue}                  <- the prompt ends here (without the cue's trailing space)

Few-NERD has no single label: a demonstration lists one `entity: type` line per gold entity and
the query ends after the sentence line. The wording follows LongICLBench's scripts (lower-case
field names, one line per field) so scores are comparable; the instruction and the "examples
are as follows" header each sit on their own line here instead of being run together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Item shapes: classification {"inputs": {name: text}, "label": str};
#: NER {"inputs": {"sentence": text}, "entities": {entity: type}}.
Item = dict[str, Any]

HEADER = "The examples are as follows:"

ACCURACY = "accuracy"
MICRO_F1 = "micro_f1"
ENTITY_F1 = "entity_f1"


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is shown to the model and scored.

    `fields` are (input key, prompt field name) pairs rendered as `name: text` lines. A
    relation dataset (`relation=True`) adds LongICLBench's "the subject is … and the object is
    …" line so the model knows which entity pair the label is about.
    """

    name: str
    n_labels: int  # as published (LongICLBench, Table 1); the loaded data decides the real set
    metric: str
    instruction: str
    fields: tuple[tuple[str, str], ...]
    cue: str
    relation: bool = False
    strip_punctuation: bool = False  # Discovery: markers differ from answers only by , . "
    default_test_per_label: int | None = None  # LongICLBench's evaluation subset per label

    @property
    def is_ner(self) -> bool:
        return self.metric == ENTITY_F1

    def render_input(self, item: Item) -> str:
        """The item's input lines (each ending in a newline), without the label."""
        inputs = item["inputs"]
        lines = [f"{name}: {inputs[key]}\n" for key, name in self.fields]
        if self.relation:
            lines.append(
                f"the subject is {inputs['subject']} and the object is {inputs['object']}\n"
            )
        return "".join(lines)

    def render_demo(self, item: Item) -> str:
        """A demonstration: the input, then the answer in exactly the form expected back."""
        if self.is_ner:
            answer = "".join(f"{entity}: {kind}\n" for entity, kind in item["entities"].items())
            return self.render_input(item) + answer
        return f"{self.render_input(item)}{self.cue}{item['label']}\n"

    def render_query(self, item: Item) -> str:
        """The test item, ending at the label cue (for Few-NERD: after the sentence line).

        The cue's trailing space is left out: BPE tokenizers attach the space to the label's
        first token (" lights_on"), so a prompt ending in a bare space forces a token boundary
        the model never saw in the demonstrations. Measured on SmolLM2-135M with the synthetic
        set: with the space it answered "100%", "7:00 AM" or nothing (0/8 right at rounds 1-2);
        without it, labels. The answer's leading space is stripped when parsing.
        """
        return self.render_input(item) + self.cue.rstrip(" ")

    def prefix(self, demos: Sequence[Item]) -> str:
        """Instruction, header and demonstrations: shared by every query of one round."""
        return f"{self.instruction}\n{HEADER}\n" + "".join(self.render_demo(d) for d in demos)

    def prompt(self, prefix: str, item: Item) -> str:
        return prefix + self.render_query(item)

    def stop(self) -> tuple[str, ...]:
        """Stop strings that end generation where parsing would stop reading anyway.

        Classification reads only the first line, so stopping at a newline changes no score
        and saves up to 100 tokens per query. Few-NERD reads `entity: type` lines until a blank
        line or the start of a new example.
        """
        if self.is_ner:
            return ("\n\n", "\nsentence:", "\nSentence:")
        return ("\n",)


_CLASSIFY = "The predicted answer must come from the demonstration examples with the exact format."


def _relation_spec(name: str, n_labels: int, text: str, **rest: Any) -> DatasetSpec:
    """TacRED and DialogRE: the relation between a subject and an object named in a `text`
    (a sentence, a dialogue), with LongICLBench's one wording for both."""
    return DatasetSpec(
        name=name,
        n_labels=n_labels,
        metric=MICRO_F1,
        instruction=f"Given a {text} and a pair of subject and object entities within the "
        f"{text}, please predict the relation between the given entities.",
        fields=((text, text),),
        cue="the relation between the two entities is: ",
        relation=True,
        **rest,
    )


SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="synthetic",
            n_labels=24,
            metric=ACCURACY,
            instruction="Given a request to a home assistant, please predict the intent of the "
            f"request. {_CLASSIFY}",
            fields=(("text", "request"),),
            cue="intent: ",
        ),
        DatasetSpec(
            name="goemotions",
            n_labels=28,
            metric=ACCURACY,
            instruction="Given a comment, please predict the emotion category of this comment. "
            + _CLASSIFY,
            fields=(("text", "comment"),),
            cue="emotion category: ",
            default_test_per_label=25,
        ),
        DatasetSpec(
            name="banking77",
            n_labels=77,
            metric=ACCURACY,
            instruction="Given a customer service query, please predict the intent of the "
            f"query. {_CLASSIFY}",
            fields=(("text", "service query"),),
            cue="intent category: ",
            default_test_per_label=7,
        ),
        _relation_spec("tacred", 41, "sentence", default_test_per_label=20),
        DatasetSpec(
            name="fewnerd",
            n_labels=66,
            metric=ENTITY_F1,
            instruction="Given the sentence, please find the named entities in the sentence and "
            "their corresponding entity types in the strict format of the given examples "
            "(entity: entity type).",
            fields=(("sentence", "sentence"),),
            cue="",
        ),
        _relation_spec("dialogre", 36, "dialogue"),
        DatasetSpec(
            name="discovery",
            n_labels=174,
            metric=ACCURACY,
            instruction="Given two sentences, please predict the conjunction word between the "
            f"two sentences, marked ( ). {_CLASSIFY}",
            fields=(("sentences", "sentences"),),
            cue="the most suitable conjunction word in the previous ( ) is: ",
            strip_punctuation=True,
            default_test_per_label=4,
        ),
    )
}


def approx_tokens(text: str) -> int:
    """Tokens estimated as ceil(characters / 4), the usual rule of thumb for English BPE.

    Why an estimate: a task is built before (and independently of) the model, so the model's
    tokenizer is not at hand when demonstrations are chosen; `tokenizer=PATH` swaps in a real
    one. The backend's exact prompt length per round is reported too (from the responses).
    """
    return -(-len(text) // 4)


def hf_token_counter(path: str) -> Callable[[str], int]:
    """Token counts from a local transformers tokenizer (no download), without special tokens."""
    from transformers import AutoTokenizer

    from evalharness.errors import InputError

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # missing dir, no tokenizer files: one actionable line
        raise InputError(
            f"liconbench.tokenizer {path!r}: cannot load a tokenizer ({type(exc).__name__})"
        ) from None

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count
