"""Reading and checking a task.yaml: every mistake is one line naming file:line and the field.

A declarative task is a folder with `task.yaml` and its data. The vocabulary follows
lm-evaluation-harness where it fits, so tasks port both ways:

| task.yaml          | lm-eval           | meaning                                            |
|--------------------|-------------------|----------------------------------------------------|
| `name`             | `task`            | the task's name in runs, reports and `compare`     |
| `summary`          | (`task_alias`)    | one line for `evalharness tasks`; not in prompts    |
| `description`      | `description`     | jinja (or a field) put before every prompt         |
| `data.path`        | `dataset_path`    | JSONL / JSON list / CSV / Parquet, next to the YAML |
| `data.hub`         | `dataset_path`    | a hub dataset id (`split`, `config`, `revision`)   |
| `output_type`      | `output_type`     | `generate` or `multiple_choice`                    |
| `prompt`           | `doc_to_text`     | jinja over a row's fields, or a field name         |
| `choices`          | `doc_to_choice`   | a field name, jinja giving a list, or a list       |
| `target`           | `doc_to_target`   | index or text of the right choice; expected answer |
| `target_delimiter` | `target_delimiter`| put between the prompt and each choice (" ")       |
| `metrics`          | `metric_list`     | acc, acc_norm, exact_match, rating, win_rate       |

Fields read as lm-eval reads them: a `prompt`, `description`, `choices` or `target` that is
exactly a field of the row stands for that field's value; for multiple choice an integer target
(written in the YAML, a field holding an int, or a template rendering digits) is an index, and
a field holding text (even digits, "2") is the text of the right choice.

`scoring` (generate only) chooses how an answer is scored: `exact_match`, `{regex: PATTERN}`
(the first group, or the whole match, compared with `target`), `{judge: rating, rubric: ...}`
(a judge rates each answer 1-10 against the rubric) or `{judge: pairwise, reference: ...}` (a
judge compares each answer with the reference answer).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import YamlLines, read_text, read_yaml_lines

from .templates import Template, compile_template

TASK_FILE = "task.yaml"
OUTPUT_TYPES = ("generate", "multiple_choice")
FIELDS = (
    "name",
    "summary",
    "description",
    "data",
    "output_type",
    "prompt",
    "system",
    "choices",
    "target",
    "target_delimiter",
    "max_new_tokens",
    "scoring",
    "metrics",
)
DATA_FIELDS = ("path", "hub", "split", "config", "revision")
SCORING_FIELDS = ("exact_match", "regex", "judge", "rubric", "reference", "ignore_case", "orders")
JUDGES = ("rating", "pairwise")
ORDERS = ("both", "random")
#: The metrics each scoring method gives (its default is all of them).
METRICS: dict[str, tuple[str, ...]] = {
    "loglikelihood": ("acc", "acc_norm"),
    "exact_match": ("exact_match",),
    "regex": ("exact_match",),
    "rating": ("rating",),
    "pairwise": ("win_rate",),
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from: a file next to task.yaml, or a hub dataset."""

    path: Path | None = None
    hub: str | None = None
    split: str = "test"
    config: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class ScoringSpec:
    """How one answer is scored; `method` is a key of `METRICS`."""

    method: str
    pattern: str | None = None
    ignore_case: bool = False
    rubric: str | None = None
    reference: Template | None = None
    orders: str = "both"

    @property
    def judged(self) -> bool:
        return self.method in JUDGES


@dataclass(frozen=True)
class TaskSpec:
    """A checked task.yaml. `text` is its exact content (part of the data hash)."""

    file: Path
    text: str
    lines: YamlLines
    name: str
    summary: str
    description: Template | None
    data: DataSpec
    output_type: str
    prompt: Template
    scoring: ScoringSpec
    metrics: tuple[str, ...]
    system: Template | None = None
    choices: str | list[Template] | Template | None = None
    target: int | str | Template | None = None
    target_delimiter: str = " "
    max_new_tokens: int = 256

    @property
    def folder(self) -> Path:
        return self.file.parent


class _Checker:
    """Error helpers bound to one file's line numbers."""

    def __init__(self, lines: YamlLines) -> None:
        self.lines = lines

    def fail(self, keys: tuple[str | int, ...], message: str) -> InputError:
        name = ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in keys)
        name = name.replace(".[", "[")
        return InputError(f"{self.lines.where(*keys)}: field {name!r}: {message}")

    def text(self, raw: dict[str, Any], keys: tuple[str, ...], *, required: bool) -> str | None:
        value = raw.get(keys[-1])
        if value is None:
            if required:
                where = self.lines.where(*keys[:-1]) if len(keys) > 1 else str(self.lines.path)
                raise InputError(f"{where}: missing field {'.'.join(keys)!r}")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(keys, f"must be a non-empty string, not {value!r}")
        return value

    def template(self, source: str, keys: tuple[str | int, ...]) -> Template:
        name = ".".join(str(k) for k in keys)
        return compile_template(source, self.lines.where(*keys), name)

    def unknown(self, raw: dict[str, Any], known: tuple[str, ...], prefix: tuple[str, ...]) -> None:
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
                raise self.fail((*prefix, str(key)), f"unknown field{hint}")


def task_file(location: Path) -> Path:
    """The task.yaml of a folder (or the file itself when given one)."""
    return location if location.suffix in (".yaml", ".yml") else location / TASK_FILE


def load_spec(location: Path) -> TaskSpec:
    """Read and check a task.yaml (or the one in a folder); nothing about the data is read."""
    path = task_file(location.expanduser())
    text = read_text(path)
    raw, lines = read_yaml_lines(path)
    check = _Checker(lines)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of task fields ({', '.join(FIELDS)})")
    check.unknown(raw, FIELDS, ())
    name = check.text(raw, ("name",), required=True)
    assert name is not None
    if not NAME.fullmatch(name):
        raise check.fail(("name",), f"{name!r} must be letters, digits, '_' or '-'")
    output_type = check.text(raw, ("output_type",), required=True)
    if output_type not in OUTPUT_TYPES:
        raise check.fail(
            ("output_type",),
            f"unknown output_type {output_type!r}; use {' or '.join(OUTPUT_TYPES)}",
        )
    summary = raw.get("summary") or ""
    if not isinstance(summary, str):
        raise check.fail(("summary",), "must be a string")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise check.fail(("description",), "must be text put before every prompt")
    data = _data(raw, path, check)
    prompt = check.text(raw, ("prompt",), required=True)
    assert prompt is not None
    system = check.text(raw, ("system",), required=False)
    if system is not None and output_type != "generate":
        raise check.fail(("system",), "only a generate task has a system message")
    spec: dict[str, Any] = {
        "description": check.template(description, ("description",)) if description else None,
        "prompt": check.template(prompt, ("prompt",)),
        "system": check.template(system, ("system",)) if system else None,
        "target": _target(raw, check),
    }
    if output_type == "multiple_choice":
        spec["choices"] = _choices(raw, check)
        if spec["target"] is None:
            raise InputError(f"{path}: missing field 'target' (the right choice's index or text)")
        delimiter = raw.get("target_delimiter", " ")
        if not isinstance(delimiter, str):
            raise check.fail(("target_delimiter",), "must be a string")
        spec["target_delimiter"] = delimiter
        if "scoring" in raw:
            raise check.fail(
                ("scoring",), "a multiple_choice task is scored by log-likelihood; remove it"
            )
        for key in ("max_new_tokens",):
            if key in raw:
                raise check.fail((key,), "only a generate task generates")
        scoring = ScoringSpec("loglikelihood")
    else:
        for key in ("choices", "target_delimiter"):
            if key in raw:
                raise check.fail((key,), "only a multiple_choice task has choices")
        scoring = _scoring(raw, path, check)
        if scoring.method in ("exact_match", "regex") and spec["target"] is None:
            raise InputError(f"{path}: missing field 'target' ({scoring.method} compares with it)")
        tokens = raw.get("max_new_tokens", 256)
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise check.fail(("max_new_tokens",), f"must be a positive integer, not {tokens!r}")
        spec["max_new_tokens"] = tokens
    return TaskSpec(
        file=path,
        text=text,
        lines=lines,
        name=name,
        summary=summary,
        data=data,
        output_type=output_type,
        scoring=scoring,
        metrics=_metrics(raw, scoring.method, check),
        **spec,
    )


def _data(raw: dict[str, Any], path: Path, check: _Checker) -> DataSpec:
    data = raw.get("data")
    if data is None:
        raise InputError(f"{path}: missing field 'data' (path: FILE or hub: DATASET_ID)")
    if isinstance(data, str):
        data = {"path": data}
    if not isinstance(data, dict):
        raise check.fail(("data",), "must be a file name or a mapping with path or hub")
    check.unknown(data, DATA_FIELDS, ("data",))
    for key in DATA_FIELDS:
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise check.fail(("data", key), f"must be a non-empty string, not {data[key]!r}")
    if ("path" in data) == ("hub" in data):
        raise check.fail(("data",), "give exactly one of path (a file) or hub (a dataset id)")
    if "path" in data:
        for key in ("config", "revision"):
            if key in data:
                raise check.fail(("data", key), "only a hub dataset has a config or revision")
        return DataSpec(path=path.parent / Path(data["path"]).expanduser())
    return DataSpec(
        hub=data["hub"],
        split=data.get("split", "test"),
        config=data.get("config"),
        revision=data.get("revision"),
    )


def _target(raw: dict[str, Any], check: _Checker) -> int | str | Template | None:
    """An index, a field name (kept as a string) or a template; resolved per row later."""
    target = raw.get("target")
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise check.fail(("target",), "must be an index, a field name or a template")
    if isinstance(target, int):
        if target < 0:
            raise check.fail(("target",), f"index must be 0 or more, not {target}")
        return target
    if "{" in target:
        return check.template(target, ("target",))
    return target


def _choices(raw: dict[str, Any], check: _Checker) -> str | list[Template] | Template:
    choices = raw.get("choices")
    if choices is None:
        raise InputError(
            f"{check.lines.path}: missing field 'choices' (a field name, a template or a list)"
        )
    if isinstance(choices, list):
        if len(choices) < 2:
            raise check.fail(("choices",), "needs at least two choices")
        for index, choice in enumerate(choices):
            if isinstance(choice, bool) or not isinstance(choice, (str, int, float)):
                raise check.fail(("choices", index), f"must be text, not {choice!r}")
        return [check.template(str(c), ("choices", i)) for i, c in enumerate(choices)]
    if not isinstance(choices, str) or not choices.strip():
        raise check.fail(("choices",), "must be a field name, a template or a list")
    if "{" in choices:
        return check.template(choices, ("choices",))
    return choices


def _scoring(raw: dict[str, Any], path: Path, check: _Checker) -> ScoringSpec:
    scoring = raw.get("scoring")
    if scoring is None:
        raise InputError(
            f"{path}: missing field 'scoring' (exact_match, regex: PATTERN, judge: rating or "
            "judge: pairwise)"
        )
    if scoring == "exact_match":
        return ScoringSpec("exact_match")
    if not isinstance(scoring, dict):
        raise check.fail(
            ("scoring",), f"{scoring!r} is not exact_match or a mapping (regex: or judge:)"
        )
    check.unknown(scoring, SCORING_FIELDS, ("scoring",))
    kinds = [k for k in ("exact_match", "regex", "judge") if k in scoring]
    if len(kinds) != 1:
        raise check.fail(("scoring",), "give exactly one of exact_match, regex or judge")
    ignore_case = scoring.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise check.fail(("scoring", "ignore_case"), "must be true or false")
    (kind,) = kinds
    if kind != "judge":
        for key in ("rubric", "reference", "orders"):
            if key in scoring:
                raise check.fail(("scoring", key), f"only a judge reads it, not {kind}")
    if kind == "exact_match":
        if scoring["exact_match"] is not True:
            raise check.fail(("scoring", "exact_match"), "must be true")
        return ScoringSpec("exact_match", ignore_case=ignore_case)
    if kind == "regex":
        pattern = check.text(scoring, ("scoring", "regex"), required=True)
        try:
            re.compile(pattern or "")
        except re.error as exc:
            raise check.fail(("scoring", "regex"), f"invalid regular expression ({exc})") from None
        return ScoringSpec("regex", pattern=pattern, ignore_case=ignore_case)
    if "ignore_case" in scoring:
        raise check.fail(("scoring", "ignore_case"), "only exact_match and regex read it")
    judge = scoring["judge"]
    if judge not in JUDGES:
        raise check.fail(("scoring", "judge"), f"unknown judge {judge!r}; use rating or pairwise")
    reference = check.text(scoring, ("scoring", "reference"), required=judge == "pairwise")
    rubric = check.text(scoring, ("scoring", "rubric"), required=judge == "rating")
    if judge == "pairwise" and "rubric" in scoring:
        raise check.fail(("scoring", "rubric"), "a pairwise judge compares with the reference")
    orders = scoring.get("orders", "both")
    if orders not in ORDERS or judge != "pairwise" and "orders" in scoring:
        raise check.fail(("scoring", "orders"), "pairwise only: both or random")
    return ScoringSpec(
        judge,
        rubric=rubric,
        orders=orders,
        reference=_field_or_template(reference, ("scoring", "reference"), check),
    )


def _field_or_template(
    value: str | None, keys: tuple[str, ...], check: _Checker
) -> Template | None:
    """A bare field name means `{{ name }}`; anything with braces is a template."""
    if value is None:
        return None
    source = value if "{" in value else "{{ " + value + " }}"
    return check.template(source, keys)


def _metrics(raw: dict[str, Any], method: str, check: _Checker) -> tuple[str, ...]:
    allowed = METRICS[method]
    metrics = raw.get("metrics")
    if metrics is None:
        return allowed
    if not isinstance(metrics, list) or not metrics:
        raise check.fail(("metrics",), f"must be a list of metrics, e.g. [{', '.join(allowed)}]")
    names = []
    for index, entry in enumerate(metrics):
        name = entry.get("metric") if isinstance(entry, dict) else entry  # lm-eval's metric_list
        if name not in allowed:
            raise check.fail(
                ("metrics", index),
                f"{name!r} is not a metric of {method} scoring; use {', '.join(allowed)}",
            )
        if name not in names:
            names.append(name)
    return tuple(names)
