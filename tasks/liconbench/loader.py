"""Where each LongICLBench dataset comes from, normalised to one item shape.

`liconbench.data=` per dataset:
- synthetic: `builtin` (default, `data/synthetic.jsonl`) or a JSONL/JSON/CSV file of rows with
  `split` (train/test), `text`, `label`.
- banking77: a directory (required) with PolyAI's `train.csv` and `test.csv` (`text,category`).
- goemotions: `hub` (default: `google-research-datasets/go_emotions`, config `simplified`) or a
  directory with `train.*`/`test.*` rows of `text` and `label` (or `labels`: a list of names or
  of GoEmotions' 28 ids). Only single-label comments are used, as in LongICLBench.
- discovery: `hub` (default: `sileod/discovery`, config `discovery`) or a directory with rows of
  `sentence1`, `sentence2`, `label` (the marker, e.g. `however`).
- tacred: a directory (required): `train_tacred.json`/`test_tacred.json` (LongICLBench's
  processed files) or `train.*`/`test.*`, rows of `sentence`, `subject_entity`,
  `object_entity`, `relation`.
- dialogre: a directory (required): `train_dialogueRE_processed.json`/`test_dialogueRE.json`
  or `train.*`/`test.*`, rows of `dialogue` with `relations` (a list of `relation`,
  `subject_entity`, `object_entity`), or one relation per row. Each (dialogue, entity pair)
  is one item.
- fewnerd: a directory (required) with LongICLBench's processed files
  `fewnerd_train_10turns.json`, `fewnerd_test_1800*.json` (lists of `sentence` and `entities`,
  {entity: type}) and, when present, `id2fine_tags.json` (the 66 types; gold types are checked
  against it).

`train.*`/`test.*` means `.jsonl`, `.json` (a list) or `.csv`. TacRED and DialogRE are licensed
(the LDC; DialogRE's dialogues are Friends transcripts), so they are read only from a path the
user provides. The hub datasets go through the `datasets` library; offline that is one
InputError saying how to pass files instead. Every malformed row is an InputError naming the
file, row and field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import read_records, require

from .specs import DatasetSpec, Item

BUILTIN = Path(__file__).resolve().parent / "data" / "synthetic.jsonl"
GOEMOTIONS_HUB = ("google-research-datasets/go_emotions", "simplified")
DISCOVERY_HUB = ("sileod/discovery", "discovery")
SUFFIXES = (".jsonl", ".json", ".csv")

#: GoEmotions' 28 label names in the dataset's id order, for files that store label ids.
GOEMOTIONS_LABELS = (
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
)


class LazyItems(Sequence[Item]):
    """Items built on access from a large table (Discovery's train split has 1.5M rows)."""

    def __init__(self, size: int, build: Callable[[int], Item]) -> None:
        self._size = size
        self._build = build

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> Item:  # type: ignore[override]
        if not -self._size <= index < self._size:
            raise IndexError(index)
        return self._build(index % self._size)


@dataclass
class Split:
    """One split: items, and per item its label (classification) or entity types (NER)."""

    items: Sequence[Item]
    labels: list[str] = field(default_factory=list)
    types: list[tuple[str, ...]] = field(default_factory=list)


@dataclass
class Splits:
    train: Split
    test: Split
    label_set: list[str]  # every label the task accepts as an answer, first-appearance order
    source: str


def _text(where: str, row: dict[str, Any], name: str) -> str:
    value = require(where, row, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {name!r} must be a non-empty string")
    return value


def _classified(items: list[Item]) -> Split:
    return Split(items=items, labels=[i["label"] for i in items])


def _file_split(path: Path, items: list[Item], what: str = "rows") -> Split:
    """The classification split read from one file, which must have given items."""
    if not items:
        raise InputError(f"{path}: no {what}")
    return _classified(items)


def _find(directory: Path, split: str, preferred: Sequence[str] = ()) -> Path:
    """The split's file: a dataset-specific name first, then `{split}.jsonl|json|csv`."""
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory (expected {split} and test files)")
    candidates = [*preferred, *(f"{split}{suffix}" for suffix in SUFFIXES)]
    for name in candidates:
        matches = sorted(directory.glob(name))
        if matches:
            return matches[0]
    raise InputError(f"{directory}: no {split} file (looked for {', '.join(candidates)})")


def _label_set(*splits: Split) -> list[str]:
    return list(dict.fromkeys(label for split in splits for label in split.labels))


def _require_path(spec: DatasetSpec, data: str, why: str) -> Path:
    if data in ("", "hub", "auto", "builtin"):
        raise InputError(f"liconbench.dataset={spec.name} needs liconbench.data=DIR ({why})")
    return Path(data).expanduser()


def _local_splits(
    directory: Path,
    read_split: Callable[[Path], Split],
    train_names: Sequence[str] = (),
    test_names: Sequence[str] = (),
) -> Splits:
    """A classification dataset from a directory: its train and test files (dataset-specific
    names first, see `_find`) read by `read_split`; labels in first-appearance order."""
    train = read_split(_find(directory, "train", train_names))
    test = read_split(_find(directory, "test", test_names))
    return Splits(train, test, _label_set(train, test), str(directory.resolve()))


# -- synthetic ------------------------------------------------------------------------------
def load_synthetic(data: str) -> Splits:
    path = BUILTIN if data in ("", "builtin", "auto") else Path(data).expanduser()
    train: list[Item] = []
    test: list[Item] = []
    for where, row in read_records(path):
        split = _text(where, row, "split")
        if split not in ("train", "test"):
            raise InputError(f"{where}: field 'split' must be 'train' or 'test', not {split!r}")
        item = {"inputs": {"text": _text(where, row, "text")}, "label": _text(where, row, "label")}
        (train if split == "train" else test).append(item)
    for split, items in (("train", train), ("test", test)):
        if not items:
            raise InputError(f"{path}: no {split} rows")
    source = f"builtin:{BUILTIN.name}" if path == BUILTIN else str(path.resolve())
    a, b = _classified(train), _classified(test)
    return Splits(a, b, _label_set(a, b), source)


# -- BANKING77 ------------------------------------------------------------------------------
def _banking_split(path: Path) -> Split:
    items = []
    for where, row in read_records(path):
        label_field = "category" if "category" in row else "label"
        items.append(
            {"inputs": {"text": _text(where, row, "text")}, "label": _text(where, row, label_field)}
        )
    return _file_split(path, items)


def load_banking77(spec: DatasetSpec, data: str) -> Splits:
    why = "a directory with PolyAI's train.csv and test.csv"
    return _local_splits(_require_path(spec, data, why), _banking_split)


# -- GoEmotions -----------------------------------------------------------------------------
def _goemotions_label(where: str, row: dict[str, Any]) -> str | None:
    """The single label of a row, or None for a multi-label comment (skipped)."""
    if "label" in row and row["label"] is not None:
        return _text(where, row, "label")
    labels = require(where, row, "labels")
    if isinstance(labels, str):  # CSV: "joy" or "joy,love"
        labels = [part for part in labels.split(",") if part.strip()]
    if not isinstance(labels, list) or not labels:
        raise InputError(f"{where}: field 'labels' must be a non-empty list")
    if len(labels) != 1:
        return None
    value = labels[0]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(GOEMOTIONS_LABELS):
            raise InputError(f"{where}: label id {value} is not one of GoEmotions' 28")
        return GOEMOTIONS_LABELS[value]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field 'labels' must hold label names or ids")
    return value.strip()


def _goemotions_split(path: Path) -> Split:
    items = []
    for where, row in read_records(path):
        text = _text(where, row, "text")
        label = _goemotions_label(where, row)
        if label is not None:
            items.append({"inputs": {"text": text}, "label": label})
    return _file_split(path, items, "single-label rows")


def _hub_dataset(repo: str, config: str, dataset: str) -> Any:
    try:
        from datasets import load_dataset

        return load_dataset(repo, config)
    except Exception as exc:  # offline, missing, auth: all one actionable line
        raise InputError(
            f"{dataset} from the hub ({repo}, {config}) failed: {type(exc).__name__}; "
            f"pass liconbench.data=DIR with train and test files instead"
        ) from None


def load_goemotions(spec: DatasetSpec, data: str) -> Splits:
    if data in ("", "hub", "auto"):
        table = _hub_dataset(*GOEMOTIONS_HUB, spec.name)
        names = table["train"].features["labels"].feature.names
        splits = []
        for name in ("train", "test"):
            columns = table[name]
            all_labels, all_texts = columns["labels"], columns["text"]  # two column reads
            keep = [i for i, ids in enumerate(all_labels) if len(ids) == 1]
            labels = [names[all_labels[i][0]] for i in keep]
            items = [
                {"inputs": {"text": all_texts[i]}, "label": label}
                for i, label in zip(keep, labels, strict=True)
            ]
            splits.append(Split(items=items, labels=labels))
        return Splits(splits[0], splits[1], list(names), "hub:" + "/".join(GOEMOTIONS_HUB))
    return _local_splits(Path(data).expanduser(), _goemotions_split)


# -- Discovery ------------------------------------------------------------------------------
def _discovery_item(sentence1: str, sentence2: str, label: str) -> Item:
    return {"inputs": {"sentences": f"{sentence1} ( ) {sentence2}"}, "label": label}


def _discovery_split(path: Path) -> Split:
    items = []
    for where, row in read_records(path):
        items.append(
            _discovery_item(
                _text(where, row, "sentence1"),
                _text(where, row, "sentence2"),
                _text(where, row, "label"),
            )
        )
    return _file_split(path, items)


def load_discovery(spec: DatasetSpec, data: str) -> Splits:
    if data in ("", "hub", "auto"):
        table = _hub_dataset(*DISCOVERY_HUB, spec.name)
        names = table["train"].features["label"].names
        splits = []
        for name in ("train", "test"):
            rows = table[name]
            labels = [names[k] for k in rows["label"]]  # one column read, not 1.5M rows

            def build(index: int, rows: Any = rows, labels: list[str] = labels) -> Item:
                row = rows[index]
                return _discovery_item(row["sentence1"], row["sentence2"], labels[index])

            splits.append(Split(items=LazyItems(len(labels), build), labels=labels))
        return Splits(splits[0], splits[1], list(names), "hub:" + "/".join(DISCOVERY_HUB))
    return _local_splits(Path(data).expanduser(), _discovery_split)


# -- TacRED and DialogRE --------------------------------------------------------------------
def _relation_item(where: str, row: dict[str, Any], text_field: str) -> Item:
    return {
        "inputs": {
            text_field: _text(where, row, text_field),
            "subject": _text(where, row, "subject_entity"),
            "object": _text(where, row, "object_entity"),
        },
        "label": _text(where, row, "relation"),
    }


def _tacred_split(path: Path) -> Split:
    items = [_relation_item(where, row, "sentence") for where, row in read_records(path)]
    return _file_split(path, items)


def load_tacred(spec: DatasetSpec, data: str) -> Splits:
    why = "TacRED is licensed by the LDC and read only from your own copy"
    directory = _require_path(spec, data, why)
    return _local_splits(directory, _tacred_split, ("train_tacred.json",), ("test_tacred.json",))


def _dialogre_split(path: Path) -> Split:
    """One item per (dialogue, entity pair): rows with a `relations` list are expanded."""
    items = []
    for where, row in read_records(path):
        if "relations" not in row:
            items.append(_relation_item(where, row, "dialogue"))
            continue
        dialogue = _text(where, row, "dialogue")
        relations = require(where, row, "relations", list)
        for k, relation in enumerate(relations):
            if not isinstance(relation, dict):
                raise InputError(f"{where}: relations[{k}] must be an object")
            item = _relation_item(
                f"{where} relations[{k}]", {**relation, "dialogue": dialogue}, "dialogue"
            )
            items.append(item)
    return _file_split(path, items, "relations")


def load_dialogre(spec: DatasetSpec, data: str) -> Splits:
    why = "DialogRE is read only from your own copy (Friends transcripts)"
    directory = _require_path(spec, data, why)
    return _local_splits(
        directory, _dialogre_split, ("train_dialogueRE_processed.json",), ("test_dialogueRE.json",)
    )


# -- Few-NERD -------------------------------------------------------------------------------
def _fewnerd_split(path: Path, known: set[str] | None) -> Split:
    items, types = [], []
    for where, row in read_records(path):
        sentence = _text(where, row, "sentence")
        entities = require(where, row, "entities", dict)
        for entity, kind in entities.items():
            if not isinstance(kind, str) or not kind.strip() or not entity.strip():
                raise InputError(f"{where}: field 'entities' must map entity names to type names")
            if known is not None and kind not in known:
                raise InputError(
                    f"{where}: entity {entity!r} has type {kind!r}, not in id2fine_tags.json"
                )
        items.append({"inputs": {"sentence": sentence}, "entities": dict(entities)})
        types.append(tuple(entities.values()))
    if not items:
        raise InputError(f"{path}: no sentences")
    return Split(items=items, types=types)


def load_fewnerd(spec: DatasetSpec, data: str) -> Splits:
    directory = _require_path(
        spec, data, "LongICLBench's processed Few-NERD files: fewnerd_train_10turns.json, ..."
    )
    known: list[str] | None = None
    tags_path = directory / "id2fine_tags.json"
    if tags_path.exists():
        tags = read_tags(tags_path)
        known = list(tags.values())
    train = _fewnerd_split(_find(directory, "train", ("fewnerd_train*.json",)), _set(known))
    test = _fewnerd_split(_find(directory, "test", ("fewnerd_test*.json",)), _set(known))
    label_set = known or list(dict.fromkeys(t for s in (train, test) for ts in s.types for t in ts))
    return Splits(train, test, label_set, str(directory.resolve()))


def _set(values: list[str] | None) -> set[str] | None:
    return set(values) if values is not None else None


def read_tags(path: Path) -> dict[str, str]:
    """`id2fine_tags.json`: a JSON object id -> entity type name."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InputError(f"{path}: expected a JSON object mapping ids to type names")
    return value


LOADERS: dict[str, Callable[[DatasetSpec, str], Splits]] = {
    "synthetic": lambda spec, data: load_synthetic(data),
    "banking77": load_banking77,
    "goemotions": load_goemotions,
    "discovery": load_discovery,
    "tacred": load_tacred,
    "dialogre": load_dialogre,
    "fewnerd": load_fewnerd,
}


def load_splits(spec: DatasetSpec, data: str) -> Splits:
    return LOADERS[spec.name](spec, data)
