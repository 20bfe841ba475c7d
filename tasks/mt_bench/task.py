"""MT-Bench as FastChat defines it: two turns, per-category sampling, single-answer grading.

Reasoning, math and coding are judged against reference answers. Turn 2 is judged on the whole
dialogue with the judge told to focus on the second answer. A verdict that does not parse is a
failure (rating -1): excluded from means, counted in `failures`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from evalharness.errors import InputError
from evalharness.requests import (
    GenerateRequest,
    Message,
    Request,
    Result,
    SamplingParams,
    canonical_json,
    sha256_hex,
)
from evalharness.stats import bootstrap_ci, mean

from ..base import JudgeItem, Sample, Task, TaskData, TaskResult
from ..registry import register_task
from .loader import load_questions

CATEGORIES = (
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
)
# FastChat's generation temperatures; categories it does not list sample at 0.7.
TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7
NEEDS_REFERENCE = ("math", "reasoning", "coding")
TEMPLATE = "mt_bench_single"
OPTIONS = ("data", "reference", "max_new_tokens", "categories")


def _round_robin(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Interleave categories so `--limit N` still covers every category."""
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for question in questions:
        by_category[question["category"]].append(question)
    ordered = []
    queues = list(by_category.values())
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


@register_task
class MTBench(Task):
    name = "mt_bench"
    description = "MT-Bench: 80 two-turn questions, 8 categories, judged 1-10 (FastChat protocol)"

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise InputError(
                f"unknown mt_bench option {sorted(unknown)[0]!r}; known: {', '.join(OPTIONS)}"
            )
        try:
            self.max_new_tokens = int(self.options.get("max_new_tokens", 1024))
        except ValueError:
            raise InputError("mt_bench.max_new_tokens must be an integer") from None

    def sampling_for(self, category: str) -> SamplingParams:
        temperature = TEMPERATURE.get(category, DEFAULT_TEMPERATURE)
        return SamplingParams(
            temperature=temperature,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed if temperature > 0 else 0,
        )

    def load(self, limit: int | None = None) -> TaskData:
        questions, source = load_questions(
            self.options.get("data", "auto"), self.options.get("reference")
        )
        wanted = self.options.get("categories")
        if wanted:
            keep = {c.strip() for c in wanted.split(",")}
            questions = [q for q in questions if q["category"] in keep]
        data_hash = sha256_hex(canonical_json(questions))
        if limit is not None:
            questions = _round_robin(questions)[:limit]
        samples = [Sample(id=str(q["question_id"]), data=q) for q in questions]
        seen = set()
        for sample in samples:
            if sample.id in seen:
                raise InputError(f"{source}: question_id {sample.id} appears twice")
            seen.add(sample.id)
        categories = sorted({q["category"] for q in questions})
        settings = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": {c: self.sampling_for(c).temperature for c in categories},
            "reference_guided": [c for c in categories if c in NEEDS_REFERENCE],
            "judge_template": TEMPLATE,
        }
        return TaskData(samples=samples, data_hash=data_hash, source=source, settings=settings)

    def requests(self, sample: Sample, responses: Mapping[str, Result]) -> dict[str, Request]:
        first, second = sample.data["turns"]
        sampling = self.sampling_for(sample.data["category"])
        turn1 = (Message("user", first),)
        requests: dict[str, Request] = {"turn1": GenerateRequest(turn1, sampling)}
        if "turn1" in responses:
            answer = responses["turn1"].text  # type: ignore[union-attr]
            dialogue = (*turn1, Message("assistant", answer), Message("user", second))
            requests["turn2"] = GenerateRequest(dialogue, sampling)
        return requests

    def judge_items(self, sample: Sample, responses: Mapping[str, Result]) -> dict[str, JudgeItem]:
        data = sample.data
        reference = data.get("reference") if data["category"] in NEEDS_REFERENCE else None
        fields = {
            "question_1": data["turns"][0],
            "question_2": data["turns"][1],
            "answer_1": responses["turn1"].text,  # type: ignore[union-attr]
            "answer_2": responses["turn2"].text,  # type: ignore[union-attr]
            "reference": reference,
        }
        return {
            "turn1": JudgeItem(
                "rating", TEMPLATE, {**fields, "turn": 1, "question_2": None, "answer_2": None}
            ),
            "turn2": JudgeItem("rating", TEMPLATE, {**fields, "turn": 2}),
        }

    def score(
        self,
        sample: Sample,
        responses: Mapping[str, Result],
        verdicts: Mapping[str, dict[str, Any]],
    ) -> dict[str, Any]:
        return {
            "category": sample.data["category"],
            "turn1": verdicts["turn1"]["rating"],
            "turn2": verdicts["turn2"]["rating"],
            "failures": sum(bool(verdicts[t].get("failure")) for t in ("turn1", "turn2")),
        }

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        ratings: dict[str, list[float]] = defaultdict(list)
        for score in scores:
            for turn in ("turn1", "turn2"):
                if score[turn] >= 0:  # -1 marks a verdict that did not parse
                    ratings["score"].append(score[turn])
                    ratings[f"score_{turn}"].append(score[turn])
                    ratings[score["category"]].append(score[turn])
        order = (
            ["score", "score_turn1", "score_turn2"]
            + [c for c in CATEGORIES if c in ratings]
            + sorted(c for c in ratings if c not in CATEGORIES and not c.startswith("score"))
        )
        metrics = {name: mean(ratings[name]) for name in order if ratings.get(name)}
        ci = {
            name: bootstrap_ci(ratings[name], seed=self.seed)
            for name in ("score", "score_turn1", "score_turn2")
            if ratings.get(name)
        }
        return TaskResult(
            metrics={k: v for k, v in metrics.items() if v is not None},
            failures=sum(s["failures"] for s in scores),
            ci={k: v for k, v in ci.items() if v is not None},
            counts={"ratings": len(ratings["score"])},
        )
