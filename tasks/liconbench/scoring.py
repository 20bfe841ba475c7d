"""Reading labels out of completions and turning them into accuracy or micro-F1, by rule.

Classification (every dataset but Few-NERD): the completion starts right after the label cue;
its first line, stripped and lower-cased, must equal the lower-cased gold label exactly.
Discovery first removes quotes, commas and periods from both sides, because its markers
("however", "as_a_result,") differ from natural answers only by that punctuation.

TacRED and DialogRE report micro-F1 the way LongICLBench computes it:
- a prediction *counts* only if it is one of the dataset's labels (after the normalisation
  above). An answer that is no label at all ("i don't know", an echoed sentence) is neither a
  true nor a false positive: it only costs recall;
- precision = correct / counted predictions; recall = correct / all gold items (every test item
  has exactly one gold relation, `no_relation` included, which is scored like any label);
- F1 = 2PR / (P + R), and 0 when P + R = 0.

Few-NERD: every `entity: type` line of the completion is one predicted (entity, type) pair,
read until a blank line or a line starting a new `sentence:`; lines without ": " are not
predictions. The entity is the text before the last ": " (entity names may contain ": "), kept
case-sensitive because it is a span of the sentence; types compare lower-cased. An entity
predicted twice counts once, with its first type (gold is one type per entity). Micro P/R/F1
over all test sentences: TP = predicted pairs equal to a gold pair.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_PUNCTUATION = re.compile(r"[\"'“”‘’,.]")


def first_line(completion: str) -> str:
    """The answer as written: the first line of the completion, stripped."""
    return completion.split("\n", 1)[0].strip()


def normalize(text: str, strip_punctuation: bool = False) -> str:
    """What is compared: stripped, lower-cased, optionally without quotes, commas, periods."""
    text = text.strip()
    if strip_punctuation:
        text = _PUNCTUATION.sub("", text).strip()
    return text.lower()


@dataclass(frozen=True)
class LabelOutcome:
    """One classification answer: what was read, whether it is right, whether it is a label."""

    prediction: str
    correct: bool
    valid: bool


def judge_label(
    completion: str, gold: str, labels: Iterable[str], strip_punctuation: bool = False
) -> LabelOutcome:
    """Score one classification completion against its gold label and the label set."""
    answer = first_line(completion)
    predicted = normalize(answer, strip_punctuation)
    valid = {normalize(label, strip_punctuation) for label in labels}
    return LabelOutcome(
        prediction=answer,
        correct=predicted == normalize(gold, strip_punctuation),
        valid=predicted in valid,
    )


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float


def prf(true_positives: int, n_predicted: int, n_gold: int) -> PRF:
    """Micro precision/recall/F1 from counts; an empty denominator gives 0, never NaN."""
    precision = true_positives / n_predicted if n_predicted else 0.0
    recall = true_positives / n_gold if n_gold else 0.0
    total = precision + recall
    return PRF(precision, recall, 2 * precision * recall / total if total else 0.0)


def label_micro_f1(outcomes: Sequence[tuple[bool, bool]]) -> PRF:
    """TacRED/DialogRE micro-F1 from (correct, valid) pairs, one per gold item."""
    return entity_micro_f1(label_counts(outcomes))


def label_counts(outcomes: Sequence[tuple[bool, bool]]) -> list[EntityCounts]:
    """Per test item micro-F1 counts from (correct, valid): TP = correct, predicted = valid
    (an answer that is no label predicts nothing), gold = 1; summing them gives the counts
    `label_micro_f1` uses, and resampling them resamples test items (the bootstrap CI)."""
    return [EntityCounts(int(correct), int(valid), 1) for correct, valid in outcomes]


def parse_entities(completion: str) -> dict[str, str]:
    """Predicted entity -> type from `entity: type` lines (see the module docstring)."""
    predictions: dict[str, str] = {}
    for raw in completion.split("\n"):
        line = raw.strip()
        if not line or line.lower().startswith("sentence:"):
            break
        if ": " not in line:
            continue
        entity, _, kind = line.rpartition(": ")
        entity, kind = entity.strip(), kind.strip()
        if entity and kind and entity not in predictions:
            predictions[entity] = kind
    return predictions


@dataclass(frozen=True)
class EntityCounts:
    true_positives: int
    n_predicted: int
    n_gold: int


def entity_counts(predicted: Mapping[str, str], gold: Mapping[str, str]) -> EntityCounts:
    """Pairs right (same entity string, same type ignoring case), predicted and gold."""
    gold_lower = {entity: kind.lower() for entity, kind in gold.items()}
    hits = sum(1 for e, k in predicted.items() if gold_lower.get(e) == k.lower())
    return EntityCounts(hits, len(predicted), len(gold))


def entity_micro_f1(counts: Iterable[EntityCounts]) -> PRF:
    items = list(counts)
    return prf(
        sum(c.true_positives for c in items),
        sum(c.n_predicted for c in items),
        sum(c.n_gold for c in items),
    )
