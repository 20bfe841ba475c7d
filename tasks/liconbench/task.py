"""LongICLBench-style long in-context learning with extreme label spaces (`liconbench`).

A model sees a growing prompt of labelled demonstrations — one per label per round, rounds 1-5
by default — and labels a test item. The result is a *curve*: the score at each context size,
reported as `round_1`, `round_2`, ... (or `budget_N` in token-budget mode), next to the
demonstration prefix's length in tokens (`prompt_tokens_round_1`, ...). Scoring is by rule
(`scoring`), so no judge is involved (`needs_judge = False`).

Each test item is one sample with one request per curve point (slot `round_1`, ...), so the
curve comes out of `aggregate` and a re-run with more rounds reuses every cached answer. The
requests are raw completions (`CompleteRequest`, no chat template), greedy, at most 100 new
tokens, stopping where parsing stops reading (see `DatasetSpec.stop`).

Efficiency: every query of one round shares the same demonstration prefix (tens of thousands
of tokens at round 5 on the real datasets) and differs only in its last few lines. A backend
with prefix caching (vLLM, SGLang, most hosted APIs) pays one long prefill per round instead of
one per query, provided a round's requests are sent together. This task issues them as one
stage per sample, and the engine sorts pending requests by prompt length, which puts one
round's queries next to each other (the prefix dominates the length); the hf backend here has
no prefix cache and simply batches them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalharness.engine.requests import (
    CompleteRequest,
    GenerateResult,
    Request,
    SamplingParams,
    canonical_json,
    sha256_hex,
)
from evalharness.errors import InputError
from evalharness.stats.intervals import BOOTSTRAP, Intervals, mean, micro_prf_bootstrap_ci

from ..base import Outcome, Sample, Task, TaskData, TaskResult
from ..common import DistinctIds, json_sha256
from ..registry import register_task
from ..signatures import Responses, Stored, StoredSlots, Verdicts
from ..views import SampleView
from .loader import Splits, load_splits
from .scoring import (
    EntityCounts,
    entity_counts,
    entity_micro_f1,
    judge_label,
    label_counts,
    parse_entities,
)
from .selection import (
    coverage_rounds,
    grouped,
    round_robin_order,
    round_robin_rounds,
    rounds_prefix,
    under_budget,
)
from .specs import ACCURACY, SPECS, DatasetSpec, Item, approx_tokens, hf_token_counter

OPTIONS = (
    "dataset",
    "data",
    "rounds",
    "order",
    "budget_tokens",
    "test_per_label",
    "max_new_tokens",
    "tokenizer",
)
ORDERS = ("round_robin", "grouped")
DEFAULT_ROUNDS = (1, 2, 3, 4, 5)
MAX_NEW_TOKENS = 100


def parse_int_list(name: str, value: str) -> tuple[int, ...]:
    """`1,2,3` or `1-5` (or a mix) as sorted distinct positive integers."""
    numbers: set[int] = set()
    try:
        for part in value.split(","):
            part = part.strip()
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                numbers.update(range(low, high + 1))
            elif part:
                numbers.add(int(part))
    except ValueError:
        raise InputError(
            f"liconbench.{name} {value!r}: expected integers like 1,2,3 or 1-5"
        ) from None
    if not numbers or min(numbers) < 1:
        raise InputError(f"liconbench.{name} {value!r}: expected positive integers")
    return tuple(sorted(numbers))


def item_key(dataset: str, item: Item) -> str:
    """Stable id material: the dataset name and the item's own content, not its position."""
    return sha256_hex(dataset + canonical_json(item))[:16]


@register_task
class LongICLBench(Task):
    name = "liconbench"
    description = (
        "LongICLBench: in-context learning with 28-174 labels as the prompt grows by rounds"
    )
    needs_judge = False

    @classmethod
    def headline_metrics(cls, settings: Mapping[str, Any]) -> list[str]:
        """The score at every round (or token budget) the run measured."""
        return [str(point) for point in settings.get("points", [])]

    @classmethod
    def outcomes(cls, scores: Mapping[str, Any], settings: Mapping[str, Any]) -> list[Outcome]:
        """Correct or not per round, for accuracy datasets; micro-F1 is not a per-item mean."""
        if settings.get("metric") != ACCURACY:
            return []
        return [
            Outcome(str(point), float(row["correct"]), kind="binary")
            for point, row in (scores.get("points") or {}).items()
        ]

    @classmethod
    def present(
        cls, data: Stored, scores: Stored | None, responses: StoredSlots, verdicts: StoredSlots
    ) -> SampleView:
        item = data.get("item") or {}
        inputs = item.get("inputs") or {}
        text = " ".join(
            str(v) if not isinstance(v, list) else " ".join(map(str, v)) for v in inputs.values()
        )
        points = (scores or {}).get("points") or {}
        correct = [float(bool(row.get("correct"))) for row in points.values()]
        gold = item.get("label", item.get("labels"))
        return SampleView(
            prompt=[text],
            responses={slot: str(result.get("text", "")) for slot, result in responses.items()},
            reference=None if gold is None else str(gold),
            verdicts=[
                {
                    "slot": point,
                    "verdict": ("correct" if row.get("correct") else "wrong")
                    + ("" if row.get("valid", True) else " (not a label)"),
                    "score": float(bool(row.get("correct"))),
                    "rationale": f"prediction: {row.get('prediction')}",
                }
                for point, row in points.items()
            ],
            score=sum(correct) / len(correct) if correct else None,
            tags={"dataset": str(data.get("dataset", ""))},
        )

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.check_options(OPTIONS)
        self.spec: DatasetSpec = SPECS[self.choice_option("dataset", SPECS, "synthetic")]
        self.order = self.choice_option("order", ORDERS, "round_robin")
        if self.order == "grouped" and self.spec.is_ner:
            raise InputError("liconbench.order=grouped needs a single-label dataset, not fewnerd")
        if "rounds" in self.options and "budget_tokens" in self.options:
            raise InputError("liconbench: give rounds or budget_tokens, not both")
        self.budgets: tuple[int, ...] = ()
        self.rounds: tuple[int, ...] = ()
        if "budget_tokens" in self.options:
            self.budgets = parse_int_list("budget_tokens", self.options["budget_tokens"])
        else:
            self.rounds = parse_int_list("rounds", self.options.get("rounds", "1-5"))
        self.test_per_label: int | None = self.spec.default_test_per_label
        if "test_per_label" in self.options:
            if self.spec.is_ner:
                raise InputError(
                    "liconbench.test_per_label does not apply to fewnerd (sentences hold several "
                    "entity types; test sentences are taken in file order)"
                )
            self.test_per_label = self.int_option("test_per_label", 0, minimum=1)
        self.max_new_tokens = self.int_option("max_new_tokens", MAX_NEW_TOKENS, minimum=1)
        # Filled by `load`: what `requests`, `score` and `aggregate` need about the data.
        self.prefixes: dict[str, str] = {}
        self.label_set: list[str] = []
        self.settings: dict[str, Any] = {}

    # -- curve points ----------------------------------------------------------------------
    @property
    def points(self) -> list[str]:
        """Slot and metric names of the curve, in order."""
        if self.budgets:
            return [f"budget_{n}" for n in self.budgets]
        return [f"round_{r}" for r in self.rounds]

    def _count(self) -> tuple[Callable[[str], int], str]:
        path = self.options.get("tokenizer")
        if path:
            return hf_token_counter(path), f"tokenizer:{path}"
        return approx_tokens, "approx:ceil(chars/4)"

    def _demonstrations(
        self, splits: Splits, count: Callable[[str], int]
    ) -> dict[str, tuple[list[int], int]]:
        """Point -> (train indices in prompt order, demonstration prefix tokens)."""
        spec, train = self.spec, splits.train
        what = f"liconbench.dataset={spec.name}"
        rounds: list[list[int]] = []
        if spec.is_ner:
            order: list[int] = list(range(len(train.items)))
        else:
            rounds = round_robin_rounds(train.labels)
            order = [i for one_round in rounds for i in one_round]
        base = count(spec.prefix([]))
        costs: dict[int, int] = {}  # a real tokenizer is slow; each demonstration counted once

        def cost(index: int) -> int:
            if index not in costs:
                costs[index] = count(spec.render_demo(train.items[index]))
            return costs[index]

        chosen: dict[str, list[int]] = {}
        if self.budgets:
            for budget, point in zip(self.budgets, self.points, strict=True):
                chosen[point], _ = under_budget(order, cost, base, budget)
        else:
            for r, point in zip(self.rounds, self.points, strict=True):
                if spec.is_ner:
                    chosen[point] = order[: coverage_rounds(train.types, r, what)]
                else:
                    chosen[point] = rounds_prefix(rounds, r, what)
        if self.order == "grouped":
            chosen = {p: grouped(ids, train.labels) for p, ids in chosen.items()}
        return {p: (ids, base + sum(cost(i) for i in ids)) for p, ids in chosen.items()}

    def _test_items(self, splits: Splits, limit: int | None) -> list[Item]:
        test = splits.test
        if self.spec.is_ner:
            indices: list[int] = list(range(len(test.items)))
        else:
            indices = round_robin_order(test.labels, self.test_per_label)
        if limit is not None:
            indices = indices[:limit]
        return [test.items[i] for i in indices]

    # -- data ------------------------------------------------------------------------------
    def load(self, limit: int | None = None) -> TaskData:
        spec = self.spec
        splits = load_splits(spec, self.options.get("data", ""))
        count, counter = self._count()
        demos = self._demonstrations(splits, count)
        self.prefixes = {
            point: spec.prefix([splits.train.items[i] for i in ids])
            for point, (ids, _) in demos.items()
        }
        self.label_set = list(splits.label_set)
        items = self._test_items(splits, limit)
        # Exact duplicates (TacRED repeats a few rows) stay distinct and stable.
        distinct = DistinctIds()
        samples = [
            Sample(distinct(item_key(spec.name, item)), {"dataset": spec.name, "item": item})
            for item in items
        ]
        material = {
            "dataset": spec.name,
            "prefixes": self.prefixes,
            "labels": self.label_set,
            "test": items,
        }
        settings: dict[str, Any] = {
            "dataset": spec.name,
            "metric": spec.metric,
            "order": self.order,
            "points": self.points,
            "n_demos": {p: len(ids) for p, (ids, _) in demos.items()},
            "prompt_tokens": {p: tokens for p, (_, tokens) in demos.items()},
            "token_count": counter,
            "n_labels": len(self.label_set),
            "n_train": len(splits.train.items),
            "test_per_label": self.test_per_label,
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "stop": list(spec.stop()),
        }
        self.settings = settings
        return TaskData(
            samples=samples,
            data_hash=json_sha256(material),
            source=splits.source,
            settings=settings,
        )

    # -- model work ------------------------------------------------------------------------
    def requests(self, sample: Sample, responses: Responses) -> dict[str, Request]:
        sampling = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens)
        item = sample.data["item"]
        return {
            point: CompleteRequest(
                prompt=self.spec.prompt(self.prefixes[point], item),
                sampling=sampling,
                stop=self.spec.stop(),
            )
            for point in self.points
        }

    # -- scores ----------------------------------------------------------------------------
    def score(self, sample: Sample, responses: Responses, verdicts: Verdicts) -> dict[str, Any]:
        item = sample.data["item"]
        points: dict[str, dict[str, Any]] = {}
        for point in self.points:
            result = responses[point]
            assert isinstance(result, GenerateResult)
            entry: dict[str, Any] = {"n_prompt_tokens": result.n_prompt_tokens}
            if self.spec.is_ner:
                predicted = parse_entities(result.text)
                counts = entity_counts(predicted, item["entities"])
                entry.update(
                    prediction=predicted,
                    true_positives=counts.true_positives,
                    n_predicted=counts.n_predicted,
                    n_gold=counts.n_gold,
                )
            else:
                outcome = judge_label(
                    result.text, item["label"], self.label_set, self.spec.strip_punctuation
                )
                entry.update(
                    prediction=outcome.prediction, correct=outcome.correct, valid=outcome.valid
                )
            points[point] = entry
        return {"points": points}

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        settings = self.settings
        metrics: dict[str, Any] = {"metric": self.spec.metric}
        intervals = Intervals()
        counts: dict[str, int] = {"n_labels": len(self.label_set), "n_test": len(scores)}
        for point in self.points:
            rows = [s["points"][point] for s in scores]
            if self.spec.metric == ACCURACY:
                correct = [float(r["correct"]) for r in rows]
                metrics[point] = mean(correct) or 0.0
                intervals.mean(point, correct, rate=True)  # a rate of test items
            else:
                if self.spec.is_ner:
                    counts_by_item = [
                        EntityCounts(r["true_positives"], r["n_predicted"], r["n_gold"])
                        for r in rows
                    ]
                else:
                    counts_by_item = label_counts([(r["correct"], r["valid"]) for r in rows])
                result = entity_micro_f1(counts_by_item)
                metrics[point] = result.f1
                metrics[f"precision_{point}"] = result.precision
                metrics[f"recall_{point}"] = result.recall
                # Ratios of summed counts, not means: their own bootstrap.
                for name, interval in self._micro_ci(point, counts_by_item).items():
                    intervals.add(name, interval, BOOTSTRAP)
            if not self.spec.is_ner:
                counts[f"invalid_{point}"] = sum(1 for r in rows if not r["valid"])
            if "n_demos" in settings:
                metrics[f"n_demos_{point}"] = settings["n_demos"][point]
                metrics[f"prompt_tokens_{point}"] = settings["prompt_tokens"][point]
            measured = [r["n_prompt_tokens"] for r in rows if r["n_prompt_tokens"]]
            if measured:
                # The backend's own count: whole prompt (prefix + query), real tokenizer.
                metrics[f"model_prompt_tokens_{point}"] = mean(measured)
        return TaskResult(
            metrics=metrics, failures=0, ci=intervals.ci, counts=counts, ci_method=intervals.method
        )

    def _micro_ci(
        self, point: str, counts_by_item: Sequence[EntityCounts]
    ) -> dict[str, tuple[float, float]]:
        """Bootstrap CIs of one point's micro F1, precision and recall, resampling test items.

        The test item is the independent unit: every item at a point sees the same fixed
        demonstration prefix, so the prefix is not a source of sampling variation here, and an
        item's (TP, predicted, gold) counts move together; each resample recomputes micro-F1
        from the summed counts, as the point estimate is computed.
        """
        intervals = micro_prf_bootstrap_ci(
            [c.true_positives for c in counts_by_item],
            [c.n_predicted for c in counts_by_item],
            [c.n_gold for c in counts_by_item],
            seed=self.seed,
        )
        if intervals is None:
            return {}
        return {
            point: intervals["f1"],
            f"precision_{point}": intervals["precision"],
            f"recall_{point}": intervals["recall"],
        }
