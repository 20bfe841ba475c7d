"""A `Task` built from a task.yaml (`loader.py`): generation or multiple choice, no Python.

`build_task_class` makes one class per task.yaml, whose name, description, judge need and
headline come from the file; the engine runs it like any task (cache, resume, CIs, reports,
`compare`). Multiple choice asks for the log-likelihood of `target_delimiter + choice` after
the rendered prompt (raw text, no chat template) for every choice and scores exactly as
lm-evaluation-harness does: `acc` is argmax(logprob) == gold, `acc_norm` argmax(logprob /
len(choice in characters)) == gold. Generation asks for one greedy chat answer, scored by rule
(`exact_match`, `regex`) or by a judge (`rating` against a rubric, `pairwise` against a
reference answer).

What `compare` and the reports read from a stored run (`outcomes`, `present`,
`headline_metrics`) depends only on stored scores, data and settings, never on the YAML, so a
run of a folder task stays readable after the folder is gone (`DeclarativeTask` itself reads
it; see `registry.stored_task_class`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from evalharness.engine.requests import Request, ScoreRequest, ScoreResult
from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds
from evalharness.stats.intervals import Intervals, mean

from ..base import JudgeItem, Outcome, Sample, Task, TaskData, TaskResult
from ..common import DistinctIds, greedy_chat, json_sha256, pairwise_orders
from ..signatures import Responses, Stored, StoredSlots, Verdicts
from ..views import SampleView, describe_verdict
from .data import read_rows
from .loader import TaskSpec, load_spec
from .templates import Template

#: The judge prompt of `judge: rating` (judges/templates/rubric_rating.*.jinja).
RUBRIC_TEMPLATE = "rubric_rating"
PAIRWISE_TEMPLATE = "pairwise"
#: How `compare` tests each metric: 0/1 per sample (McNemar), a 1-10 rating, a continuous score.
#: lm-eval tasks name a metric under a filter `metric:filter`; its kind is the metric's.
METRIC_KINDS = {
    "acc": "binary",
    "acc_norm": "binary",
    "acc_bytes": "binary",
    "acc_mutual_info": "binary",
    "exact_match": "binary",
    "rating": "rating",
    "win_rate": "continuous",
}


def metric_kind(name: str) -> str | None:
    return METRIC_KINDS.get(name.partition(":")[0])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


OPTIONS = ("data",)


class DeclaredResults(Task):
    """How a declared task's stored results read: a task.yaml task and an lm-eval task YAML
    (`lm_eval_task.LmEvalTask`) store the same shapes (metric means per sample, choices with
    their log-probabilities), so both share these readers and nothing else."""

    # -- reading stored results ------------------------------------------------------------
    @classmethod
    def headline_metrics(cls, settings: Mapping[str, Any]) -> list[str]:
        return [str(m) for m in settings.get("metrics") or cls.headline]

    @classmethod
    def outcomes(cls, scores: Mapping[str, Any], settings: Mapping[str, Any]) -> list[Outcome]:
        """Every metric is the mean of its per-sample value, so each sample is one outcome."""
        return [
            Outcome(metric, float(value), kind=kind)
            for metric, value in scores.items()
            if (kind := metric_kind(metric)) is not None and _is_number(value)
        ]

    @classmethod
    def present(
        cls, data: Stored, scores: Stored | None, responses: StoredSlots, verdicts: StoredSlots
    ) -> SampleView:
        scores = scores or {}
        score = next(
            (float(v) for m, v in scores.items() if metric_kind(m) and _is_number(v)), None
        )
        choices = data.get("choices")
        if choices is not None:  # multiple choice: each choice with its log-probability
            gold = data.get("gold")
            shown = {}
            for index, choice in enumerate(choices):
                result = responses.get(f"choice_{index}", {})
                notes = [f"logprob {result['logprob']:.4f}"] if "logprob" in result else []
                if index == scores.get("pred"):
                    notes.append("predicted")
                if index == gold:
                    notes.append("correct")
                shown[f"choice {index}"] = f"{choice}  ({', '.join(notes)})"
            reference = choices[gold] if isinstance(gold, int) and gold < len(choices) else None
            return SampleView(
                prompt=[str(data.get("prompt", ""))], responses=shown, reference=reference,
                score=score,
            )  # fmt: skip
        return SampleView(
            prompt=[str(data.get("prompt", ""))],
            responses={slot: str(r.get("text", "")) for slot, r in responses.items()},
            reference=data.get("reference") or data.get("target"),
            verdicts=[describe_verdict(slot, v) for slot, v in verdicts.items()],
            score=score,
        )


class DeclarativeTask(DeclaredResults):
    """Shared behaviour of every task.yaml task; subclasses carry their `spec`."""

    name: ClassVar[str] = "declarative"
    description: ClassVar[str] = "a task declared in a task.yaml"
    spec: ClassVar[TaskSpec | None] = None

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        if self.spec is None:
            raise InputError("a declarative task needs its task.yaml (build_task_class)")
        self.check_options(OPTIONS)
        self.task_spec: TaskSpec = self.spec

    # -- data ------------------------------------------------------------------------------
    def load(self, limit: int | None = None) -> TaskData:
        spec = self.task_spec
        rows, data_hash = read_rows(spec, self.options.get("data"))
        samples, distinct, ids = [], DistinctIds(), UniqueIds()
        for where, row in rows:
            if row.get("id") is not None:
                sample_id = str(row["id"])
                ids.add(where, sample_id)
            else:
                # Identical rows without an id stay distinct, as lm-eval counts them.
                sample_id = distinct(row_key(row))
            samples.append(Sample(id=sample_id, data=self._sample_data(row, where)))
        if limit is not None:
            samples = samples[:limit]
        settings = {
            "declarative": True,
            "task_yaml": str(spec.file),
            "output_type": spec.output_type,
            "scoring": spec.scoring.method,
            "metrics": list(spec.metrics),
        }
        if spec.output_type == "generate":
            settings.update(max_new_tokens=spec.max_new_tokens, temperature=0.0)
        else:
            settings["target_delimiter"] = spec.target_delimiter
        if spec.scoring.judged:
            settings["judge_template"] = (
                RUBRIC_TEMPLATE if spec.scoring.method == "rating" else PAIRWISE_TEMPLATE
            )
        source = str(spec.file) if spec.data.path else f"hub:{spec.data.hub}"
        return TaskData(samples=samples, data_hash=data_hash, source=source, settings=settings)

    def _sample_data(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        """What is stored per sample: the rendered prompt and the resolved answer fields."""
        spec = self.task_spec
        # lm-eval puts the description straight before the prompt (no delimiter).
        description = spec.description.render_value(row, where) if spec.description else ""
        data: dict[str, Any] = {"prompt": description + spec.prompt.render_value(row, where)}
        if spec.system is not None:
            data["system"] = spec.system.render(row, where)
        if spec.output_type == "multiple_choice":
            choices = self._choices(row, where)
            data["choices"] = choices
            data["gold"] = self._gold(row, where, choices)
        else:
            if spec.target is not None:
                data["target"] = str(self._target_value(row, where))
            if spec.scoring.reference is not None:
                data["reference"] = spec.scoring.reference.render(row, where)
        data["row"] = row
        return data

    def _choices(self, row: dict[str, Any], where: str) -> list[str]:
        """lm-eval's doc_to_choice: a field, a template rendering a list literal, or a list."""
        spec = self.task_spec
        keys = ("choices",)
        choices: Any
        if isinstance(spec.choices, list):
            choices = [template.render(row, where) for template in spec.choices]
        elif isinstance(spec.choices, Template):
            text = spec.choices.render(row, where)
            try:
                choices = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise self._row_error(keys, where, f"{text[:60]!r} is not a list") from None
        else:
            assert spec.choices is not None
            if spec.choices not in row:
                raise self._row_error(keys, where, f"row has no field {spec.choices!r}")
            choices = row[spec.choices]
        if not isinstance(choices, (list, tuple)) or len(choices) < 2:
            raise self._row_error(keys, where, "needs a list of at least two choices")
        if not all(isinstance(c, str) for c in choices):
            raise self._row_error(keys, where, "every choice must be text")
        return list(choices)

    def _target_value(self, row: dict[str, Any], where: str) -> Any:
        target = self.task_spec.target
        if isinstance(target, Template):
            return target.render(row, where)
        if isinstance(target, str):
            if target not in row or row[target] is None:
                raise self._row_error(("target",), where, f"row has no field {target!r}")
            return row[target]
        return target

    def _gold(self, row: dict[str, Any], where: str, choices: list[str]) -> int:
        """lm-eval's doc_to_target: an int is an index, and so is a template that renders
        digits; text (a field holding "2" included) is the right choice's text."""
        value = self._target_value(row, where)
        if isinstance(self.task_spec.target, Template) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(choices):
                raise self._row_error(
                    ("target",), where, f"index {value} is past the {len(choices)} choices"
                )
            return value
        if isinstance(value, str) and value in choices:
            return choices.index(value)
        raise self._row_error(("target",), where, f"{value!r} is not one of the choices")

    def _row_error(self, keys: tuple[str, ...], where: str, message: str) -> InputError:
        field = ".".join(keys)
        return InputError(
            f"{self.task_spec.lines.where(*keys)}: field {field!r}: {message} (row {where})"
        )

    # -- model and judge work --------------------------------------------------------------
    def requests(self, sample: Sample, responses: Responses) -> dict[str, Request]:
        spec = self.task_spec
        data = sample.data
        if spec.output_type == "multiple_choice":
            return {
                f"choice_{index}": ScoreRequest(
                    context=data["prompt"], continuation=spec.target_delimiter + choice
                )
                for index, choice in enumerate(data["choices"])
            }
        return {"output": greedy_chat(data["prompt"], spec.max_new_tokens, data.get("system"))}

    def judge_protocols(self) -> tuple[str, ...]:
        method = self.task_spec.scoring.method
        return (method,) if self.task_spec.scoring.judged else ()

    def planned_judge_items(self, sample: Sample) -> list[tuple[str, int]]:
        scoring = self.task_spec.scoring
        if scoring.method == "rating":
            return [("rating", 1)]
        if scoring.method == "pairwise":
            return [("pairwise", 2 if scoring.orders == "both" else 1)]
        return []

    def judge_items(self, sample: Sample, responses: Responses) -> dict[str, JudgeItem]:
        scoring = self.task_spec.scoring
        if not scoring.judged:
            return {}
        data = sample.data
        answer = responses["output"].text  # type: ignore[union-attr]
        reference = data.get("reference")
        fields: dict[str, Any] = {
            "question_1": data["prompt"],
            "answer_1": answer,
            "turn": 1,
        }
        if scoring.method == "rating":
            fields.update(rubric=scoring.rubric, reference=[reference] if reference else None)
            return {"verdict": JudgeItem("rating", RUBRIC_TEMPLATE, fields)}
        fields.update(baseline_1=reference, reference=None)
        orders = pairwise_orders(scoring.orders, self.seed, sample.id)
        return {"verdict": JudgeItem("pairwise", PAIRWISE_TEMPLATE, fields, orders)}

    # -- scores ----------------------------------------------------------------------------
    def score(self, sample: Sample, responses: Responses, verdicts: Verdicts) -> dict[str, Any]:
        spec = self.task_spec
        method = spec.scoring.method
        if method == "loglikelihood":
            return self._score_choices(sample, responses)
        answer = responses["output"].text  # type: ignore[union-attr]
        if method in ("exact_match", "regex"):
            extracted = self._extract(answer)
            target = sample.data["target"].strip()
            if spec.scoring.ignore_case and extracted is not None:
                extracted, target = extracted.lower(), target.lower()
            return {"exact_match": float(extracted == target), "extracted": extracted}
        verdict = verdicts.get("verdict") or {"failure": True}
        failed = bool(verdict.get("failure"))
        if method == "rating":
            rating = None if failed else verdict.get("rating")
            return {"rating": rating, "failure": failed}
        preference = None if failed else verdict.get("preference")
        return {
            "win_rate": None if preference is None else 100.0 * (float(preference) - 1.0),
            "preference": preference,
            "winner": verdict.get("winner"),
            "failure": failed,
        }

    def _extract(self, answer: str) -> str | None:
        """The answer as compared with the target: stripped; for regex, the first group."""
        scoring = self.task_spec.scoring
        if scoring.method == "exact_match":
            return answer.strip()
        flags = re.IGNORECASE if scoring.ignore_case else 0
        match = re.search(scoring.pattern or "", answer, flags)
        if match is None:
            return None
        return (match.group(1) if match.groups() else match.group(0)).strip()

    def _score_choices(self, sample: Sample, responses: Responses) -> dict[str, Any]:
        """lm-eval's multiple-choice rule: numpy argmax (first on ties) of the summed logprobs,
        and of the logprobs per character of each choice (without the delimiter)."""
        choices = sample.data["choices"]
        results = [responses[f"choice_{i}"] for i in range(len(choices))]
        assert all(isinstance(r, ScoreResult) for r in results)
        logprobs = np.array([r.logprob for r in results], dtype=float)  # type: ignore[union-attr]
        lengths = np.array([float(len(c)) for c in choices])
        gold = sample.data["gold"]
        pred, pred_norm = int(np.argmax(logprobs)), int(np.argmax(logprobs / lengths))
        scores: dict[str, Any] = {"pred": pred, "pred_norm": pred_norm, "gold": gold}
        if "acc" in self.task_spec.metrics:
            scores["acc"] = float(pred == gold)
        if "acc_norm" in self.task_spec.metrics:
            scores["acc_norm"] = float(pred_norm == gold)
        return scores

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        metrics: dict[str, Any] = {}
        intervals = Intervals(seed=self.seed)
        counts: dict[str, int] = {}
        for metric in self.task_spec.metrics:
            values = [float(s[metric]) for s in scores if s.get(metric) is not None]
            counts[f"scored_{metric}"] = len(values)
            if not values:
                continue
            metrics[metric] = mean(values)
            # A binary metric (acc, acc_norm, exact_match) is a rate of 0/1 outcomes: the Wilson
            # interval, which keeps its coverage near 0 and 1. A 1-10 rating or a soft win rate
            # is not a rate: a bootstrap of the mean.
            intervals.mean(metric, values, rate=METRIC_KINDS.get(metric) == "binary")
        failures = sum(bool(s.get("failure")) for s in scores)
        return TaskResult(
            metrics=metrics,
            failures=failures,
            ci=intervals.ci,
            counts=counts,
            ci_method=intervals.method,
        )


def row_key(row: Mapping[str, Any]) -> str:
    """The id of a row without one: the hash of its stable text, in which values JSON cannot
    hold (Parquet dates) are text."""
    try:
        return json_sha256(dict(row))[:16]
    except TypeError:
        return json_sha256({k: str(v) for k, v in row.items()})[:16]


def build_task_class(spec: TaskSpec) -> type[DeclarativeTask]:
    """One `Task` class for one task.yaml (the engine instantiates classes, not specs)."""
    attributes = {
        "name": spec.name,
        "description": spec.summary or f"declared in {spec.file}",
        "needs_judge": spec.scoring.judged,
        "headline": spec.metrics,
        "spec": spec,
        "__doc__": spec.summary or f"The task declared in {spec.file}.",
    }
    class_name = "Declared_" + re.sub(r"\W", "_", spec.name)
    return type(class_name, (DeclarativeTask,), attributes)


def class_from_folder(location: Path) -> type[DeclarativeTask]:
    """The task of a folder holding task.yaml (or of a task.yaml file itself)."""
    return build_task_class(load_spec(location))
