"""The contract between a task family and the engine.

A task turns its data into samples with stable ids, asks for model work per sample (possibly in
several stages, e.g. a second turn that needs the first answer), asks judges for verdicts, and
turns verdicts into per-sample scores and aggregates. The engine does everything else: caching,
batching, resuming, storing, printing. Adding a task never touches the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evalharness.requests import Request, Result


@dataclass(frozen=True)
class Sample:
    """One benchmark item; `id` must be stable across runs and data reloads."""

    id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class JudgeItem:
    """What a judge sees for one verdict: a protocol, a prompt template and its fields."""

    protocol: str  # "rating" (1-10 single answer) for now; "pairwise" etc. plug in later
    template: str
    fields: dict[str, Any]


@dataclass
class TaskData:
    samples: list[Sample]
    data_hash: str
    source: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskResult:
    metrics: dict[str, float]
    failures: int
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class Task(ABC):
    """Base class for a task family; register subclasses with `@register_task`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_judge: ClassVar[bool] = True

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        self.options = dict(options or {})
        self.seed = seed

    @abstractmethod
    def load(self, limit: int | None = None) -> TaskData:
        """Read the data (a path, a package or the hub) and return samples in a fixed order."""

    @abstractmethod
    def requests(self, sample: Sample, responses: Mapping[str, Result]) -> dict[str, Request]:
        """Named model requests this sample needs, given the responses it already has.

        Called repeatedly: a task returns later-stage requests once their inputs exist.
        """

    def judge_items(self, sample: Sample, responses: Mapping[str, Result]) -> dict[str, JudgeItem]:
        """Named items to judge once every request of the sample has its response."""
        return {}

    @abstractmethod
    def score(
        self,
        sample: Sample,
        responses: Mapping[str, Result],
        verdicts: Mapping[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """Per-sample scores (JSON values)."""

    @abstractmethod
    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        """Task-level metrics from per-sample scores."""
