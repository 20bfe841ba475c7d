"""The runner: tasks → requests → backend (through the cache) → judges → scores → store.

Every call that costs model or judge time is looked up in the store first and written back as
soon as its batch finishes, so a re-run of the same command makes zero calls and an interrupted
run resumes with only the missing work. The run id is derived from what the run computes (model,
judge, tasks, data, limit, seed), so "the same command" always means "the same run".
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalharness import provenance
from evalharness.backends import Backend, load_backend
from evalharness.backends.base import all_results
from evalharness.modelspec import ModelSpec
from evalharness.requests import (
    GenerateRequest,
    Request,
    Result,
    canonical_json,
    result_from_json,
    sha256_hex,
    to_jsonable,
)
from evalharness.store import Link, RunStore
from evalharness.tasks import JudgeItem, Sample, Task, TaskData, get_task_class

#: How many judge items are judged and committed together.
JUDGE_CHUNK = 8


@dataclass
class RunSpec:
    model: ModelSpec
    tasks: list[str]
    task_options: dict[str, dict[str, str]] = field(default_factory=dict)
    judge: str = "self"
    judge_mode: str = "auto"
    judge_base_url: str | None = None
    judge_max_new_tokens: int = 512
    limit: int | None = None
    seed: int = 0


@dataclass
class RunOutcome:
    run_id: str
    model: str
    judge: str | None
    tasks: dict[str, dict[str, Any]]
    calls_made: dict[str, int]
    resumed: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "judge": self.judge,
            "tasks": self.tasks,
            "calls_made": self.calls_made,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Pending:
    task: str
    sample_id: str
    slot: str
    request: Request
    key: str


Progress = Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]]


@contextlib.contextmanager
def no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda advance: None


def response_key(model_hash: str, request: Request) -> str:
    return sha256_hex(model_hash + canonical_json(request))


def _sort_key(item: _Pending) -> tuple:
    """Group equal sampling settings and similar lengths so batches stay full and unpadded."""
    request = item.request
    if isinstance(request, GenerateRequest):
        sampling = request.sampling
        size = sum(len(m.content) for m in request.messages)
        return (
            0,
            sampling.temperature,
            sampling.max_new_tokens,
            sampling.top_p,
            sampling.seed,
            size,
        )
    return (1, 0, 0, 0, 0, len(request.context) + len(request.continuation))


class Runner:
    def __init__(self, store: RunStore, progress: Progress = no_progress) -> None:
        self.store = store
        self.progress = progress
        self.calls = {"model": 0, "judge": 0}

    # -- public --------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> RunOutcome:
        from evalharness.judges import build_judge

        started = time.perf_counter()
        backend = load_backend(spec.model)
        tasks = [
            get_task_class(name)(spec.task_options.get(name), spec.seed) for name in spec.tasks
        ]
        loaded = {task.name: task.load(spec.limit) for task in tasks}
        judge = None
        if any(task.needs_judge for task in tasks):
            judge = build_judge(
                spec.judge,
                model_spec=spec.model,
                model_backend=backend,
                mode=spec.judge_mode,
                base_url=spec.judge_base_url,
                max_new_tokens=spec.judge_max_new_tokens,
            )
        task_info = {
            task.name: {
                "options": task.options,
                "data_hash": loaded[task.name].data_hash,
                "source": loaded[task.name].source,
                "settings": loaded[task.name].settings,
                "n_samples": len(loaded[task.name].samples),
            }
            for task in tasks
        }
        run_key = {
            "model": backend.identity_hash,
            "judge": judge.identity_hash if judge else None,
            "tasks": {
                name: {k: info[k] for k in ("options", "data_hash")}
                for name, info in task_info.items()
            },
            "limit": spec.limit,
            "seed": spec.seed,
        }
        run_id = sha256_hex(canonical_json(run_key))[:12]
        prov = provenance.collect(
            model_identity=backend.identity,
            judge_identity=judge.identity if judge else None,
            tasks=task_info,
            seed=spec.seed,
        )
        resumed = self.store.begin_run(
            run_id,
            model=spec.model.raw,
            judge=judge.display_name if judge else None,
            spec={
                "tasks": spec.tasks,
                "task_options": spec.task_options,
                "limit": spec.limit,
                "seed": spec.seed,
                "judge_mode": spec.judge_mode,
            },
            provenance=prov,
        )
        self.store.put_identity(backend.identity_hash, backend.identity)
        if judge:
            self.store.put_identity(judge.identity_hash, judge.identity)
        for task in tasks:
            data = loaded[task.name]
            self.store.put_task(run_id, task.name, len(data.samples), task_info[task.name])
            self.store.put_samples(run_id, task.name, [(s.id, s.data) for s in data.samples])
        try:
            responses = self._generate(run_id, tasks, loaded, backend)
            verdicts = self._judge(run_id, tasks, loaded, responses, judge)
            results = self._score(run_id, tasks, loaded, responses, verdicts)
        except BaseException:
            self.store.finish_run(run_id, status="interrupted")
            raise
        self.store.finish_run(run_id)
        return RunOutcome(
            run_id=run_id,
            model=spec.model.raw,
            judge=judge.display_name if judge else None,
            tasks=results,
            calls_made=dict(self.calls),
            resumed=resumed,
            seconds=time.perf_counter() - started,
        )

    # -- stages --------------------------------------------------------------------------
    def _generate(
        self,
        run_id: str,
        tasks: Sequence[Task],
        loaded: dict[str, TaskData],
        backend: Backend,
    ) -> dict[tuple[str, str], dict[str, Result]]:
        """Loop until no sample asks for a request it has no response to (multi-stage tasks)."""
        model_hash = backend.identity_hash
        responses: dict[tuple[str, str], dict[str, Result]] = defaultdict(dict)
        while True:
            pending = [
                _Pending(task.name, sample.id, slot, request, response_key(model_hash, request))
                for task in tasks
                for sample in loaded[task.name].samples
                for slot, request in task.requests(
                    sample, responses[(task.name, sample.id)]
                ).items()
                if slot not in responses[(task.name, sample.id)]
            ]
            if not pending:
                return responses
            cached = self.store.get_responses(p.key for p in pending)
            for item in pending:
                if item.key in cached:
                    responses[(item.task, item.sample_id)][item.slot] = result_from_json(
                        cached[item.key]
                    )
            self.store.put_links(
                run_id, [self._link(p, "response") for p in pending if p.key in cached]
            )
            misses = sorted((p for p in pending if p.key not in cached), key=_sort_key)
            if misses:
                self._execute(run_id, backend, model_hash, misses, responses)

    def _execute(
        self,
        run_id: str,
        backend: Backend,
        model_hash: str,
        misses: list[_Pending],
        responses: dict[tuple[str, str], dict[str, Result]],
    ) -> None:
        by_key: dict[str, list[_Pending]] = defaultdict(list)
        for item in misses:
            by_key[item.key].append(item)
        unique = [items[0] for items in by_key.values()]
        with self.progress("generating", len(unique)) as advance:
            for start in range(0, len(unique), backend.batch_size):
                chunk = unique[start : start + backend.batch_size]
                results = self._call(backend, [p.request for p in chunk])
                self.calls["model"] += len(chunk)
                self.store.put_responses(
                    model_hash,
                    [
                        (p.key, to_jsonable(p.request), to_jsonable(r))
                        for p, r in zip(chunk, results, strict=True)
                    ],
                )
                links = []
                for item, result in zip(chunk, results, strict=True):
                    for duplicate in by_key[item.key]:
                        responses[(duplicate.task, duplicate.sample_id)][duplicate.slot] = result
                        links.append(self._link(duplicate, "response"))
                self.store.put_links(run_id, links)
                advance(len(chunk))

    @staticmethod
    def _call(backend: Backend, requests: list[Request]) -> list[Result]:
        """Send a homogeneous chunk; mixed chunks are split by kind, order kept."""
        results: list[Result | None] = [None] * len(requests)
        generate = [i for i, r in enumerate(requests) if isinstance(r, GenerateRequest)]
        score = [i for i, r in enumerate(requests) if not isinstance(r, GenerateRequest)]
        if generate:
            for i, result in zip(
                generate, backend.generate([requests[i] for i in generate]), strict=True
            ):
                results[i] = result
        if score:
            for i, result in zip(score, backend.score([requests[i] for i in score]), strict=True):
                results[i] = result
        return all_results(results)

    def _judge(
        self,
        run_id: str,
        tasks: Sequence[Task],
        loaded: dict[str, TaskData],
        responses: dict[tuple[str, str], dict[str, Result]],
        judge: Any,
    ) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
        verdicts: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        if judge is None:
            return verdicts
        judge_hash = judge.identity_hash
        pending: list[tuple[str, str, str, JudgeItem, str]] = []
        for task in tasks:
            for sample in loaded[task.name].samples:
                items = task.judge_items(sample, responses[(task.name, sample.id)])
                for slot, item in items.items():
                    key_material = {
                        "item": to_jsonable(item),
                        "extra": judge.item_key_fields(item),
                    }
                    key = sha256_hex(judge_hash + canonical_json(key_material))
                    pending.append((task.name, sample.id, slot, item, key))
        cached = self.store.get_verdicts(p[4] for p in pending)
        hits = []
        for task_name, sample_id, slot, _, key in pending:
            if key in cached:
                verdicts[(task_name, sample_id)][slot] = cached[key]
                hits.append(Link(task_name, sample_id, "verdict", slot, key))
        self.store.put_links(run_id, hits)
        unique: dict[str, tuple[str, str, str, JudgeItem, str]] = {}
        duplicates: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for entry in pending:
            if entry[4] not in cached:
                unique.setdefault(entry[4], entry)
                duplicates[entry[4]].append(entry[:3])
        todo = list(unique.values())
        with self.progress("judging", len(todo)) as advance:
            for start in range(0, len(todo), JUDGE_CHUNK):
                chunk = todo[start : start + JUDGE_CHUNK]
                per_item = [judge.requests_for(entry[3]) for entry in chunk]
                flat = [r for requests in per_item for r in requests]
                results = self._call(judge.backend, flat)
                self.calls["judge"] += len(flat)
                stored, links, cursor = [], [], 0
                for entry, requests in zip(chunk, per_item, strict=True):
                    verdict = judge.verdict(entry[3], results[cursor : cursor + len(requests)])
                    cursor += len(requests)
                    stored.append((entry[4], to_jsonable(entry[3]), verdict))
                    for task_name, sample_id, slot in duplicates[entry[4]]:
                        verdicts[(task_name, sample_id)][slot] = verdict
                        links.append(Link(task_name, sample_id, "verdict", slot, entry[4]))
                self.store.put_verdicts(judge_hash, stored)
                self.store.put_links(run_id, links)
                advance(len(chunk))
        return verdicts

    def _score(
        self,
        run_id: str,
        tasks: Sequence[Task],
        loaded: dict[str, TaskData],
        responses: dict[tuple[str, str], dict[str, Result]],
        verdicts: dict[tuple[str, str], dict[str, dict[str, Any]]],
    ) -> dict[str, dict[str, Any]]:
        results = {}
        for task in tasks:
            samples: list[Sample] = loaded[task.name].samples
            scores = {
                s.id: task.score(s, responses[(task.name, s.id)], verdicts[(task.name, s.id)])
                for s in samples
            }
            self.store.put_sample_scores(run_id, task.name, scores)
            outcome = task.aggregate(samples, [scores[s.id] for s in samples])
            entry = {
                "n": len(samples),
                "failures": outcome.failures,
                "metrics": outcome.metrics,
                "ci": {k: list(v) for k, v in outcome.ci.items()},
                "counts": outcome.counts,
            }
            self.store.put_task_metrics(run_id, task.name, entry, outcome.failures)
            results[task.name] = entry
        return results

    @staticmethod
    def _link(item: _Pending, kind: str) -> Link:
        return Link(item.task, item.sample_id, kind, item.slot, item.key)
