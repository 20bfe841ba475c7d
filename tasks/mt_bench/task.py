"""MT-Bench as FastChat defines it: two turns, per-category sampling, LLM-judged.

Reasoning, math and coding are judged against reference answers: inline `reference` fields, or
`reference=PATH` (FastChat's `reference_answer/gpt-4.jsonl`, matched on question_id) for any
`data=`; a run that grades them without says so in its warnings. Turn 2 is judged on the whole
dialogue with the judge told to focus on the second answer. A verdict that does not parse is a
failure (rating -1): excluded from means, counted in `failures`.

Modes:
- `single` (default): each answer rated 1-10.
- `pairwise`: each answer compared with a baseline's (a stored run or a model), judged in both
  orders, combined by the judge mode's rule (`judges/llm.py`): in `text` mode a verdict that
  flips with the order is a tie (FastChat's rule); in `probs` mode the winner is the side of
  the mean P(candidate) over the orders, so a flip is a tie only when that mean is 0.5.
  Reports win/tie/loss, how often the judge agreed with itself across orders (swap
  consistency) and, in probs mode, the mean |P(candidate) first - P(candidate) second|.

`judge_prompts=PATH` reads FastChat's `judge_prompts.jsonl` and judges with its exact prompts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalharness.engine.requests import GenerateRequest, Message, Request, Result, SamplingParams
from evalharness.errors import InputError
from evalharness.judges.llm import order_gap
from evalharness.judges.prompts import FASTCHAT, fastchat_prompt_name, load_fastchat_prompts
from evalharness.stats.intervals import Intervals, mean

from ..base import JudgeItem, Outcome, Sample, Task, TaskData, TaskResult
from ..common import json_sha256, pairwise_orders
from ..registry import register_task
from ..signatures import Responses, Stored, StoredSlots, Verdicts
from ..views import SampleView, describe_verdict
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
PAIRWISE_TEMPLATE = "pairwise"
MODES = ("single", "pairwise")
ORDERS = ("both", "random")
OPTIONS = (
    "data",
    "reference",
    "max_new_tokens",
    "categories",
    "mode",
    "baseline",
    "judge_prompts",
    "orders",
)
TURNS = ("turn1", "turn2")


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

    headline = ("score",)

    @classmethod
    def outcomes(cls, scores: Mapping[str, Any], settings: Mapping[str, Any]) -> list[Outcome]:
        """One outcome per judged turn, under the overall, per-turn and category metrics."""
        found = []
        for turn in TURNS:
            value = scores.get(turn)
            if value is None:
                continue
            if isinstance(value, str):  # pairwise: the winner of the turn
                value = {"candidate": 1.0, "tie": 0.5, "baseline": 0.0}[value]
            for metric in ("score", f"score_{turn}", scores["category"]):
                found.append(Outcome(metric, float(value), unit=turn, kind="rating"))
        return found

    @classmethod
    def present(
        cls, data: Stored, scores: Stored | None, responses: StoredSlots, verdicts: StoredSlots
    ) -> SampleView:
        judged = [
            o.value for o in cls.outcomes(scores or {"category": ""}, {}) if o.metric == "score"
        ]
        references = data.get("reference") or []
        return SampleView(
            prompt=[str(turn) for turn in data.get("turns", [])],
            responses={
                slot: str(responses[slot].get("text", "")) for slot in TURNS if slot in responses
            },
            reference="\n\n".join(str(r) for r in references) if references else None,
            verdicts=[describe_verdict(slot, verdicts[slot]) for slot in sorted(verdicts)],
            score=sum(judged) / len(judged) if judged else None,
            tags={"category": str(data.get("category", ""))},
        )

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.check_options(OPTIONS)
        self.max_new_tokens = self.int_option("max_new_tokens", 1024)
        self.mode = self.choice_option("mode", MODES, "single")
        self.orders = self.choice_option("orders", ORDERS, "both")
        if self.mode == "pairwise" and not self.options.get("baseline"):
            raise InputError("mt_bench.mode=pairwise needs a baseline: --baseline RUN_OR_MODEL")
        self.fastchat_prompts: dict[str, dict[str, Any]] | None = None
        if self.options.get("judge_prompts"):
            self.fastchat_prompts = load_fastchat_prompts(Path(self.options["judge_prompts"]))
        self.baseline: dict[str, dict[str, Result]] = {}

    # -- baseline ------------------------------------------------------------------------
    def judge_protocols(self) -> tuple[str, ...]:
        return ("pairwise",) if self.mode == "pairwise" else ("rating",)

    def planned_judge_items(self, sample: Sample) -> list[tuple[str, int]]:
        n_orders = 2 if self.orders == "both" else 1
        protocol = self.judge_protocols()[0]
        return [(protocol, n_orders if protocol == "pairwise" else 1)] * len(TURNS)

    def baseline_source(self) -> str | None:
        return self.options.get("baseline") if self.mode == "pairwise" else None

    def attach_baseline(self, responses: Mapping[str, Mapping[str, Result]]) -> None:
        self.baseline = {sid: dict(slots) for sid, slots in responses.items()}

    def sampling_for(self, category: str) -> SamplingParams:
        temperature = TEMPERATURE.get(category, DEFAULT_TEMPERATURE)
        return SamplingParams(
            temperature=temperature,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed if temperature > 0 else 0,
        )

    def load(self, limit: int | None = None) -> TaskData:
        questions, source, reference_source = load_questions(
            self.options.get("data", "auto"), self.options.get("reference")
        )
        wanted = self.options.get("categories")
        if wanted:
            keep = {c.strip() for c in wanted.split(",")}
            questions = [q for q in questions if q["category"] in keep]
        data_hash = json_sha256(questions)
        if limit is not None:
            questions = _round_robin(questions)[:limit]
        self._check_fastchat_prompts(questions)
        # Unique: every loader checks its file's question_ids (`UniqueIds`), naming the line.
        samples = [Sample(id=str(q["question_id"]), data=q) for q in questions]
        categories = sorted({q["category"] for q in questions})
        settings = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": {c: self.sampling_for(c).temperature for c in categories},
            "reference_guided": [c for c in categories if c in NEEDS_REFERENCE],
            "references": _reference_record(questions, reference_source),
            "mode": self.mode,
            "judge_template": (
                "fastchat:judge_prompts.jsonl"
                if self.fastchat_prompts
                else PAIRWISE_TEMPLATE
                if self.mode == "pairwise"
                else TEMPLATE
            ),
        }
        return TaskData(samples=samples, data_hash=data_hash, source=source, settings=settings)

    @classmethod
    def warnings(cls, settings: Mapping[str, Any]) -> list[str]:
        """Questions FastChat grades against a reference that this run graded without one:
        their ratings are not comparable with published MT-Bench numbers."""
        record = settings.get("references") or {}
        missing = record.get("needing_reference", 0) - record.get("questions_with_reference", 0)
        if missing <= 0:
            return []
        questions = "question" if missing == 1 else "questions"
        return [
            f"{missing} {'/'.join(NEEDS_REFERENCE)} {questions} graded without "
            "reference answers (FastChat grades them against references); pass "
            "mt_bench.reference=PATH (FastChat's reference_answer/gpt-4.jsonl)"
        ]

    def _check_fastchat_prompts(self, questions: list[dict[str, Any]]) -> None:
        """Every FastChat prompt judging will ask for exists: checked before any generation."""
        if self.fastchat_prompts is None:
            return
        protocol = self.judge_protocols()[0]
        for question in questions:
            guided = question["category"] in NEEDS_REFERENCE and bool(question.get("reference"))
            for turn in (1, 2):
                name = fastchat_prompt_name(protocol, turn, guided)
                if name not in self.fastchat_prompts:
                    raise InputError(
                        f"{self.options['judge_prompts']}: no prompt named {name!r} (needed "
                        f"for question {question['question_id']}, turn {turn})"
                    )

    def requests(self, sample: Sample, responses: Responses) -> dict[str, Request]:
        first, second = sample.data["turns"]
        sampling = self.sampling_for(sample.data["category"])
        turn1 = (Message("user", first),)
        requests: dict[str, Request] = {"turn1": GenerateRequest(turn1, sampling)}
        if "turn1" in responses:
            answer = responses["turn1"].text  # type: ignore[union-attr]
            dialogue = (*turn1, Message("assistant", answer), Message("user", second))
            requests["turn2"] = GenerateRequest(dialogue, sampling)
        return requests

    def judge_items(self, sample: Sample, responses: Responses) -> dict[str, JudgeItem]:
        data = sample.data
        guided = data["category"] in NEEDS_REFERENCE and bool(data.get("reference"))
        fields: dict[str, Any] = {
            "question_1": data["turns"][0],
            "question_2": data["turns"][1],
            "answer_1": responses["turn1"].text,  # type: ignore[union-attr]
            "answer_2": responses["turn2"].text,  # type: ignore[union-attr]
            "reference": data.get("reference") if guided else None,
        }
        protocol = self.judge_protocols()[0]
        orders: tuple[bool, ...] = ()
        if protocol == "pairwise":
            baseline = self.baseline[sample.id]
            fields["baseline_1"] = baseline["turn1"].text  # type: ignore[union-attr]
            fields["baseline_2"] = baseline["turn2"].text  # type: ignore[union-attr]
            orders = pairwise_orders(self.orders, self.seed, sample.id)
        items = {}
        for turn, slot in ((1, "turn1"), (2, "turn2")):
            turn_fields = dict(fields, turn=turn)
            if turn == 1:
                turn_fields.update(question_2=None, answer_2=None, baseline_2=None)
            template = PAIRWISE_TEMPLATE if protocol == "pairwise" else TEMPLATE
            if self.fastchat_prompts is not None:
                name = fastchat_prompt_name(protocol, turn, guided)
                if name not in self.fastchat_prompts:
                    raise InputError(f"{self.options['judge_prompts']}: no prompt named {name!r}")
                template = FASTCHAT
                turn_fields["fastchat_prompt"] = self.fastchat_prompts[name]
            items[slot] = JudgeItem(protocol, template, turn_fields, orders)
        return items

    def score(self, sample: Sample, responses: Responses, verdicts: Verdicts) -> dict[str, Any]:
        failures = sum(bool(verdicts[t].get("failure")) for t in TURNS)
        if self.mode == "pairwise":
            return {
                "category": sample.data["category"],
                **{t: verdicts[t].get("winner") for t in TURNS},
                **{f"{t}_consistent": verdicts[t].get("consistent") for t in TURNS},
                **{f"{t}_order_gap": order_gap(verdicts[t]) for t in TURNS},
                "failures": failures,
            }
        # A failed verdict has no rating (None): reward-model ratings can be negative, so -1
        # cannot mark failures here.
        return {
            "category": sample.data["category"],
            **{t: None if verdicts[t].get("failure") else verdicts[t]["rating"] for t in TURNS},
            "failures": failures,
        }

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        if self.mode == "pairwise":
            return self._aggregate_pairwise(samples, scores)
        ratings: dict[str, list[float]] = defaultdict(list)
        questions: dict[str, list[str]] = defaultdict(list)  # the question of each rating
        for sample, score in zip(samples, scores, strict=True):
            for turn in TURNS:
                if score[turn] is not None:
                    for name in ("score", f"score_{turn}", score["category"]):
                        ratings[name].append(score[turn])
                        questions[name].append(sample.id)
        metrics = {name: mean(ratings[name]) for name in _metric_order(ratings, "score")}
        # A question's two turns are rated on one dialogue by one model, so they are correlated
        # and count as one cluster (taking turns as independent would narrow the interval): the
        # t interval over questions, because MT-Bench runs are often a handful of questions,
        # where the bootstrap's interval covered 0.885 at 8. Per-turn metrics have one value
        # per question, for which this is the one-sample t.
        intervals = Intervals()
        for name in metrics:
            intervals.mean(name, ratings[name], rate=False, clusters=questions[name])
        return TaskResult(
            metrics={k: v for k, v in metrics.items() if v is not None},
            failures=sum(s["failures"] for s in scores),
            ci=intervals.ci,
            counts={"ratings": len(ratings["score"])},
            ci_method=intervals.method,
        )

    def _aggregate_pairwise(
        self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]
    ) -> TaskResult:
        """Win/tie/loss over (question, turn) verdicts; `score` = wins + ties/2 (a win rate)."""
        points: dict[str, list[float]] = defaultdict(list)
        questions: dict[str, list[str]] = defaultdict(list)  # the question of each verdict
        outcomes: dict[str, int] = {"win": 0, "tie": 0, "loss": 0}
        # Rates and order checks are means of per-verdict values too: kept apart from `points`
        # (whose names are the score metrics) only so each gets its question-level CI.
        rates: dict[str, list[float]] = defaultdict(list)
        rate_questions: dict[str, list[str]] = defaultdict(list)
        consistency: list[float] = []
        gaps: list[float] = []
        for sample, score in zip(samples, scores, strict=True):
            for turn in TURNS:
                winner = score[turn]
                if winner is None:
                    continue
                outcome = {"candidate": "win", "tie": "tie", "baseline": "loss"}[winner]
                outcomes[outcome] += 1
                value = {"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome]
                for name in ("score", f"score_{turn}", score["category"]):
                    points[name].append(value)
                    questions[name].append(sample.id)
                found = {f"{kind}_rate": float(outcome == kind) for kind in outcomes}
                if score[f"{turn}_consistent"] is not None:
                    consistency.append(float(score[f"{turn}_consistent"]))
                    found["swap_consistency"] = consistency[-1]
                if score.get(f"{turn}_order_gap") is not None:  # probs verdicts, both orders
                    gaps.append(score[f"{turn}_order_gap"])
                    found["order_gap"] = gaps[-1]
                for name, rate in found.items():
                    rates[name].append(rate)
                    rate_questions[name].append(sample.id)
        n = sum(outcomes.values())
        metrics: dict[str, float] = {}
        if n:
            metrics = {
                "score": mean(points["score"]),  # type: ignore[dict-item]
                "win_rate": outcomes["win"] / n,
                "tie_rate": outcomes["tie"] / n,
                "loss_rate": outcomes["loss"] / n,
            }
            if consistency:
                metrics["swap_consistency"] = mean(consistency)  # type: ignore[assignment]
            if gaps:
                metrics["order_gap"] = mean(gaps)  # type: ignore[assignment]
            for name in _metric_order(points, "score")[1:]:
                metrics[name] = mean(points[name])  # type: ignore[assignment]
        # Points (1 / 0.5 / 0), win/tie/loss and agreement across orders are rates of per-verdict
        # outcomes in [0, 1]: the Wilson interval on the effective number of verdicts, clustered
        # by question (all wins keeps an interval below 1, where the bootstrap's was (1, 1)).
        # The order gap is a mean of continuous gaps, not a rate: the t interval over questions.
        intervals = Intervals()
        for name in _metric_order(points, "score"):
            intervals.mean(name, points[name], rate=True, clusters=questions[name])
        for name in rates:
            is_rate = name != "order_gap"
            intervals.mean(name, rates[name], rate=is_rate, clusters=rate_questions[name])
        return TaskResult(
            metrics=metrics,
            failures=sum(s["failures"] for s in scores),
            ci=intervals.ci,
            counts={"verdicts": n, **outcomes, "both_orders": len(consistency)},
            ci_method=intervals.method,
        )


def _reference_record(questions: list[dict[str, Any]], source: str | None) -> dict[str, Any]:
    """Whether this run's reference-guided questions had references, stored with the run so
    provenance shows it and `warnings` can be recomputed by `show`."""
    needing = [q for q in questions if q["category"] in NEEDS_REFERENCE]
    return {
        "source": source,
        "needing_reference": len(needing),
        "questions_with_reference": sum(bool(q.get("reference")) for q in needing),
    }


def _metric_order(values: Mapping[str, list[float]], overall: str) -> list[str]:
    """Overall, per turn, then categories in MT-Bench's order, then any other category."""
    order = (
        [overall, f"{overall}_turn1", f"{overall}_turn2"]
        + [c for c in CATEGORIES if c in values]
        + sorted(c for c in values if c not in CATEGORIES and not c.startswith(overall))
    )
    return [name for name in order if values.get(name)]
