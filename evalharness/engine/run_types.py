"""What a run is asked (`RunSpec`), settles first (`RunPlan`), passes on and answers.

The stages of a run (generation, judging, scoring) live in their own modules; these are the
shapes they hand each other, kept apart so each stage imports them without importing another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from evalharness.backends import Backend
from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import Result
from evalharness.judges.llm import DEFAULT_MAX_NEW_TOKENS, DEFAULT_RETRIES
from evalharness.store.run_store import Link
from evalharness.tasks.base import Task, TaskData

#: (task, sample id) -> slot -> the model's answer to that slot's request.
Responses = dict[tuple[str, str], dict[str, Result]]
#: (task, sample id) -> slot -> the judge's verdict on that slot's item.
Verdicts = dict[tuple[str, str], dict[str, dict[str, Any]]]

W = TypeVar("W")


@dataclass
class SlotWork(Generic[W]):
    """One slot of one sample still to be worked out (a request to answer, an item to judge)
    and the cache key its result is stored under; `link` ties that result to a run."""

    task: str
    sample_id: str
    slot: str
    work: W
    key: str

    def link(self, kind: str) -> Link:
        return Link(self.task, self.sample_id, kind, self.slot, self.key)


@dataclass
class RunSpec:
    model: ModelSpec
    tasks: list[str]
    task_options: dict[str, dict[str, str]] = field(default_factory=dict)
    #: None: each task's default judge (`Task.default_judge`), else the evaluated model.
    judge: str | None = None
    judge_mode: str = "auto"
    judge_base_url: str | None = None
    #: The variable holding an openai: judge's key; not part of the run id (the key is a secret
    #: and does not change what the judge computes).
    judge_api_key_env: str | None = None
    judge_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    judge_concurrency: int | None = None
    judge_timeout_s: float | None = None
    judge_http_retries: int | None = None
    judge_retries: int = DEFAULT_RETRIES
    max_judge_calls: int | None = None
    limit: int | None = None
    seed: int = 0
    #: Where a judge that is a local model runs; None: where the evaluated model runs.
    #: Not part of the run id (the device changes no answer's identity).
    judge_device: str | None = None


@dataclass(kw_only=True)
class RunOutcome:
    """What `evalharness run --json` prints: the fields in this order, `seconds` rounded."""

    run_id: str
    status: str = "complete"
    model: str
    judge: str | None
    tasks: dict[str, dict[str, Any]]
    calls_made: dict[str, int]
    judging: dict[str, Any] = field(default_factory=dict)
    #: One-line reasons not to take the numbers at face value (see `run_warnings`).
    warnings: list[str] = field(default_factory=list)
    resumed: bool
    seconds: float
    #: Where the model and a local judge ran (provenance's `devices`).
    devices: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass
class RunPlan:
    """Everything a run settles before its first model call: the tasks with their data, the
    model, a judge per judged task, and what each task contributes to the run's identity."""

    spec: RunSpec
    tasks: list[Task]
    loaded: dict[str, TaskData]
    backend: Backend
    #: task name -> its judge; tasks with equal judge specs share one judge object.
    judges: dict[str, Any]
    #: task name -> options, data hash, source, settings, sample count, baseline, judge hash.
    task_info: dict[str, dict[str, Any]]

    @property
    def unique_judges(self) -> list[Any]:
        """Each distinct judge once (by identity), in the order tasks first use them."""
        return list({j.identity_hash: j for j in self.judges.values()}.values())

    @property
    def judge_names(self) -> str | None:
        return ", ".join(dict.fromkeys(j.display_name for j in self.judges.values())) or None

    @property
    def self_judged(self) -> list[str]:
        """Tasks judged by the evaluated model itself."""
        return sorted(name for name, judge in self.judges.items() if judge.backend is self.backend)
