"""The contract between a task family and the engine.

A task turns its data into samples with stable ids, asks for model work per sample (possibly in
several stages, e.g. a second turn that needs the first answer), asks judges for verdicts, and
turns verdicts into per-sample scores and aggregates. The engine does everything else: caching,
batching, resuming, storing, printing. Adding a task never touches the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evalharness.engine.requests import Request, Result
from evalharness.errors import InputError

from .signatures import Responses, Stored, StoredSlots, Verdicts
from .views import SampleView, describe_verdict


@dataclass(frozen=True)
class Sample:
    """One benchmark item; `id` must be stable across runs and data reloads."""

    id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class JudgeItem:
    """What a judge sees for one verdict: a protocol, a prompt template and its fields.

    Protocols:
    - `rating`: grade one answer 1-10. Fields: question_1, answer_1 (and question_2, answer_2
      for a second turn), turn, reference (list of reference turns or None).
    - `pairwise`: compare a candidate with a baseline. Same fields plus baseline_1 (and
      baseline_2). `orders` lists, per judging pass, whether the candidate is shown first
      (as "A"): `(True, False)` judges both orders, a single entry one seeded order.
    - `refusal`: one of `PROTOCOL_LABELS["refusal"]` for one answer (`text`, and `prompt` for
      context), e.g. DriftCaps' safety verdicts.
    - `classify`: label one text (`text`, and `prompt` for context) with any labels.
    """

    protocol: str
    template: str
    fields: dict[str, Any]
    orders: tuple[bool, ...] = ()


#: Protocols whose verdicts are labels from a fixed set. A task reads only these labels (any other
#: would silently count as the wrong class), so a judge that gives other labels for the protocol
#: is refused before any work (`Judge.check_protocol`).
PROTOCOL_LABELS: dict[str, tuple[str, ...]] = {
    "refusal": ("full_compliance", "full_refusal", "partial_refusal"),
}


@dataclass
class TaskData:
    samples: list[Sample]
    data_hash: str
    source: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: Inputs besides the options and the data that the task's numbers depend on (JSON values,
    #: e.g. the hash of AlpacaEval's calibration file): part of the run id, so a run stored with
    #: other ones is a different run and is never rescored with these. None adds nothing.
    extra_inputs: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """One paired unit of a metric, so `compare` can test two runs on the same samples.

    The metric is the mean of its outcomes over the samples (and units) a run has; `compare`
    pairs two runs on (sample id, unit). `unit` separates several outcomes of one sample (MT-Bench's
    two turns, LIConBench's rounds). `kind` chooses the paired test: `binary` (0/1, McNemar),
    `rating` (ordinal scores, Wilcoxon signed-rank and sign counts), `continuous` (Wilcoxon).
    A metric with several units in one sample is tested per sample instead (Wilcoxon on the
    sample's mean difference), because a sample's units are not independent.
    """

    metric: str
    value: float
    unit: str = ""
    kind: str = "continuous"
    higher_is_better: bool = True


@dataclass
class TaskResult:
    """A task's aggregate: metrics, their CIs, and for each CI the method that made it
    (`ci_method`, a name in `evalharness.stats.intervals.CI_METHODS`), so a reader of the stored run
    knows what an interval is."""

    metrics: dict[str, float]
    failures: int
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    ci_method: dict[str, str] = field(default_factory=dict)


class Task(ABC):
    """Base class for a task family; register subclasses with `@register_task`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_judge: ClassVar[bool] = True
    #: The judge used when the run names none (e.g. refusal rules); None = the model itself.
    default_judge: ClassVar[str | None] = None
    #: The metrics a leaderboard shows and `compare` gates on by default.
    headline: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        self.options = dict(options or {})
        self.seed = seed

    def check_options(self, known: Sequence[str]) -> None:
        """Refuse options this task does not know, naming the ones it does."""
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise InputError(
                f"unknown {self.name} option {unknown[0]!r}; known: {', '.join(known)}"
            )

    def int_option(self, name: str, default: int, minimum: int | None = None) -> int:
        """An integer option, refused with the task's name when it is not one (or is below
        `minimum`, when given)."""
        raw = self.options.get(name, default)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise InputError(f"{self.name}.{name} must be an integer, not {raw!r}") from None
        if minimum is not None and value < minimum:
            raise InputError(f"{self.name}.{name} must be at least {minimum}")
        return value

    def choice_option(self, name: str, choices: Collection[str], default: str) -> str:
        """An option that must be one of `choices`, refused naming them all when it is not."""
        value = self.options.get(name, default)
        if value not in choices:
            raise InputError(f"{self.name}.{name} {value!r} is not one of {', '.join(choices)}")
        return value

    @abstractmethod
    def load(self, limit: int | None = None) -> TaskData:
        """Read the data (a path, a package or the hub) and return samples in a fixed order."""

    @abstractmethod
    def requests(self, sample: Sample, responses: Responses) -> dict[str, Request]:
        """Named model requests this sample needs, given the responses it already has.

        Called repeatedly: a task returns later-stage requests once their inputs exist.
        """

    def judge_items(self, sample: Sample, responses: Responses) -> dict[str, JudgeItem]:
        """Named items to judge once every request of the sample has its response."""
        return {}

    def judge_protocols(self) -> tuple[str, ...]:
        """Protocols this task's items use, checked against the judge before any work."""
        return ()

    def planned_judge_items(self, sample: Sample) -> list[tuple[str, int]]:
        """(protocol, number of orders) per item this sample will send to the judge.

        Known before generation, so the engine can estimate judge calls up front.
        """
        return []

    def baseline_source(self) -> str | None:
        """A run id or model spec whose answers pairwise items compare against, if any."""
        return None

    def attach_baseline(self, responses: Mapping[str, Mapping[str, Result]]) -> None:
        """Receive the baseline's responses per sample id (same slots as this task's)."""
        raise NotImplementedError(f"{self.name} does not compare against a baseline")

    @abstractmethod
    def score(self, sample: Sample, responses: Responses, verdicts: Verdicts) -> dict[str, Any]:
        """Per-sample scores (JSON values)."""

    @abstractmethod
    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        """Task-level metrics from per-sample scores."""

    # -- reading stored results (classmethods: no data is loaded, only stored values are read) --
    @classmethod
    def headline_metrics(cls, settings: Mapping[str, Any]) -> list[str]:
        """Headline metric names for a run with these stored settings (some depend on them)."""
        return list(cls.headline)

    @classmethod
    def warnings(cls, settings: Mapping[str, Any]) -> list[str]:
        """One-line reasons not to take this run's numbers at face value, from its stored
        settings (not from loaded data), so `show` repeats exactly what `run` said."""
        return []

    @classmethod
    def outcomes(cls, scores: Mapping[str, Any], settings: Mapping[str, Any]) -> list[Outcome]:
        """Per-sample outcomes of the metrics that are means, for paired comparison.

        Metrics that are not means of per-sample values (F1, fitted win rates) have none;
        `compare` reports their deltas without a test.
        """
        return []

    @classmethod
    def present(
        cls, data: Stored, scores: Stored | None, responses: StoredSlots, verdicts: StoredSlots
    ) -> SampleView:
        """A readable view of one stored sample; the default suits a single-prompt task."""
        prompt = next(
            (
                str(data[key])
                for key in ("prompt", "instruction", "question", "text")
                if key in data
            ),
            "",
        )
        return SampleView(
            prompt=[prompt] if prompt else [],
            responses={slot: str(result.get("text", "")) for slot, result in responses.items()},
            reference=str(data["reference"]) if data.get("reference") else None,
            verdicts=[describe_verdict(slot, verdict) for slot, verdict in verdicts.items()],
        )
