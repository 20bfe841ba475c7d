"""The runner: tasks → requests → backend (through the cache) → judges → scores → store.

Every call that costs model or judge time is looked up in the store first and written back as
soon as its batch finishes, so a re-run of the same command makes zero calls and an interrupted
run resumes with only the missing work. The run id is derived from what the run computes (model,
judge, tasks, data, limit, seed), so "the same command" always means "the same run".
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalharness.backends import Backend, load_backend
from evalharness.backends.spec import ModelSpec, parse_model_spec
from evalharness.engine.requests import (
    CompleteRequest,
    FailedResult,
    GenerateRequest,
    Request,
    Result,
    ScoreRequest,
    canonical_json,
    result_from_json,
    result_to_json,
    sha256_hex,
    to_jsonable,
)
from evalharness.errors import BackendError, InputError
from evalharness.store import provenance
from evalharness.store.run_store import Link, RunStore
from evalharness.tasks.base import JudgeItem, Sample, Task, TaskData
from evalharness.tasks.registry import available_tasks, task_classes

if TYPE_CHECKING:  # for annotations only: `_build_judges` imports the judges lazily
    from evalharness.judges.base import Judge

#: How many judge items are judged and committed together.
JUDGE_CHUNK = 8


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
    judge_max_new_tokens: int = 512
    judge_concurrency: int | None = None
    judge_timeout_s: float | None = None
    judge_http_retries: int | None = None
    judge_retries: int = 2
    max_judge_calls: int | None = None
    limit: int | None = None
    seed: int = 0
    #: Where a judge that is a local model runs; None: where the evaluated model runs.
    #: Not part of the run id (the device changes no answer's identity).
    judge_device: str | None = None


@dataclass
class RunOutcome:
    run_id: str
    model: str
    judge: str | None
    tasks: dict[str, dict[str, Any]]
    calls_made: dict[str, int]
    resumed: bool
    seconds: float
    status: str = "complete"
    judging: dict[str, Any] = field(default_factory=dict)
    #: One-line reasons not to take the numbers at face value (see `run_warnings`).
    warnings: list[str] = field(default_factory=list)
    #: Where the model and a local judge ran (provenance's `devices`).
    devices: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "model": self.model,
            "judge": self.judge,
            "tasks": self.tasks,
            "calls_made": self.calls_made,
            "judging": self.judging,
            "warnings": self.warnings,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 3),
            "devices": self.devices,
        }


#: The per-task count of samples with an input cut to fit a model's context (`counts`).
#: Named apart from tasks' own counts (TrueMatch's `truncated` counts descriptions it cut).
TRUNCATED_COUNT = "context_truncated"


def run_warnings(spec: dict[str, Any], tasks: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Warnings about a run, from the spec and per-task entries it stored (so `show` gives the
    ones `run` gave).

    A task judged by the evaluated model grades its own answers: fine for trying the pipeline
    out, meaningless as a score. Scripts and CI read `--json`, so it must say so there too.
    Each task adds its own (`Task.warnings`) from the settings stored in the spec. A task whose
    samples had inputs cut to fit a model's context (`TRUNCATED_COUNT` in its counts) says how
    many: their scores saw less than the whole input.
    """
    warnings = []
    self_judged = spec.get("self_judged") or []
    if self_judged:
        warnings.append(
            f"{', '.join(self_judged)} judged by the model itself: a demonstration of the "
            "pipeline, not a meaningful judge; pass --judge for real grading"
        )
    registered = available_tasks()
    for name, settings in (spec.get("task_settings") or {}).items():
        if name in registered:  # a run stored by a task no longer installed has none
            warnings.extend(f"{name}: {w}" for w in registered[name].warnings(settings))
    for name, entry in (tasks or {}).items():
        cut = ((entry or {}).get("counts") or {}).get(TRUNCATED_COUNT, 0)
        if cut:
            warnings.append(
                f"{name}: {cut} of {entry.get('n', '?')} samples had an input longer than the "
                "model's (or judge's) context, cut to fit (a prompt loses its start, a reward "
                "model's input its end): their scores saw less than the whole input"
            )
    return warnings


def any_truncated(results: Any) -> bool:
    """Whether any of these results (or stored verdicts) had an input cut to fit a context."""
    return any(
        (r.get("truncated") if isinstance(r, dict) else getattr(r, "truncated", False))
        for r in results
    )


@dataclass
class JudgeStats:
    """What judging did in this invocation; every failure is counted, none is dropped."""

    #: Judge calls if every verdict parses at its first attempt (before the verdict cache).
    estimated_calls: int = 0
    #: The most judge calls judging can make: every unparseable verdict asked again
    #: `judge.retries` times. `--max-judge-calls` caps the calls actually made.
    max_calls: int = 0
    items: int = 0
    cached: int = 0
    judged: int = 0
    parse_retries: int = 0
    parse_failures: int = 0
    failed_requests: int = 0
    over_budget: int = 0
    http_errors: dict[str, int] = field(default_factory=dict)

    @property
    def unjudged(self) -> int:
        return self.failed_requests + self.over_budget

    def to_json(self) -> dict[str, Any]:
        return {
            "estimated_calls": self.estimated_calls,
            "max_calls": self.max_calls,
            "items": self.items,
            "cached": self.cached,
            "judged": self.judged,
            "parse_retries": self.parse_retries,
            "parse_failures": self.parse_failures,
            "unjudged": {"request_failed": self.failed_requests, "over_budget": self.over_budget},
            "http_errors": self.http_errors,
        }


def unjudged_verdict(reason: str) -> dict[str, Any]:
    """Stands in for a verdict the judge could not give this time; never cached."""
    return {
        "failure": True,
        "unjudged": True,
        "error": reason,
        "rating": -1.0,
        "preference": None,
        "winner": None,
        "label": None,
    }


@dataclass
class _JudgeEntry:
    task: str
    sample_id: str
    slot: str
    item: JudgeItem
    key: str

    def link(self) -> Link:
        return Link(self.task, self.sample_id, "verdict", self.slot, self.key)


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
    if isinstance(request, (GenerateRequest, CompleteRequest)):
        sampling = request.sampling
        if isinstance(request, CompleteRequest):
            size = len(request.prompt)
        else:
            size = sum(len(m.content) for m in request.messages)
        return (
            0,
            sampling.temperature,
            sampling.max_new_tokens,
            sampling.top_p,
            sampling.seed,
            size,
        )
    if isinstance(request, ScoreRequest):
        return (1, 0, 0, 0, 0, len(request.context) + len(request.continuation))
    return (2, 0, 0, 0, 0, 0)


def _device_records(backend: Backend, judges: dict[str, Any]) -> dict[str, Any]:
    """Where the model and each local judge ran (`Backend.device_record`), for provenance."""
    records: dict[str, Any] = {"model": backend.device_record()}
    judged = {
        name: judge.backend.device_record()
        for name, judge in sorted(judges.items())
        if judge.backend is not None and judge.backend is not backend
    }
    found = {name: record for name, record in judged.items() if record is not None}
    if found:
        unique = {json.dumps(r, sort_keys=True) for r in found.values()}
        records["judge"] = next(iter(found.values())) if len(unique) == 1 else found
    return records


class Runner:
    def __init__(
        self,
        store: RunStore,
        progress: Progress = no_progress,
        notify: Callable[[str], None] = lambda message: None,
        *,
        use_backend: Backend | None = None,
        use_judge: Judge | None = None,
    ) -> None:
        """`use_backend` and `use_judge`, when given, replace the ones the spec would build:
        importers whose answers and ratings are keyed by the task's own question ids
        (FastChat's files) build them from the questions before the run starts."""
        self.store = store
        self.progress = progress
        self.notify = notify
        self.use_backend = use_backend
        self.use_judge = use_judge
        self.calls = {"model": 0, "judge": 0, "baseline": 0}
        self.judge_stats = JudgeStats()

    # -- public --------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> RunOutcome:

        started = time.perf_counter()
        # Tasks first: a misspelt task name fails before a model is resolved and hashed.
        tasks = [
            task_class(spec.task_options.get(name), spec.seed)
            for name in spec.tasks
            for task_class in task_classes(name)
        ]
        names = [task.name for task in tasks]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise InputError(f"--tasks runs the task {twice[0]!r} twice")
        backend = self.use_backend or load_backend(spec.model)
        loaded = {task.name: task.load(spec.limit) for task in tasks}
        judges = self._build_judges(spec, tasks, backend)
        unique_judges = list({j.identity_hash: j for j in judges.values()}.values())
        judge_names = ", ".join(dict.fromkeys(j.display_name for j in judges.values())) or None
        self_judged = sorted(name for name, judge in judges.items() if judge.backend is backend)
        baselines = {
            task.name: self._attach_baseline(task, loaded[task.name], spec.model.device)
            for task in tasks
        }
        task_info = {
            task.name: {
                "options": task.options,
                "data_hash": loaded[task.name].data_hash,
                "source": loaded[task.name].source,
                "settings": loaded[task.name].settings,
                "n_samples": len(loaded[task.name].samples),
                "baseline": baselines[task.name],
                "judge_hash": judges[task.name].identity_hash if task.name in judges else None,
            }
            for task in tasks
        }
        if judges:
            self._estimate(tasks, loaded, judges, spec.max_judge_calls)
        judge_hashes = sorted({j.identity_hash for j in unique_judges})
        run_key = {
            "model": backend.identity_hash,
            # One judge keeps the plain hash; several are listed per task.
            "judge": (
                judge_hashes[0]
                if len(judge_hashes) == 1
                else {name: j.identity_hash for name, j in sorted(judges.items())} or None
            ),
            "tasks": {
                name: {k: info[k] for k in ("options", "data_hash", "baseline")}
                # Only tasks with extra inputs add the key: other run ids stay as they were.
                | ({"inputs": loaded[name].extra_inputs} if loaded[name].extra_inputs else {})
                for name, info in task_info.items()
            },
            "limit": spec.limit,
            "seed": spec.seed,
        }
        run_id = sha256_hex(canonical_json(run_key))[:12]
        prov = provenance.collect(
            model_identity=backend.identity,
            judge_identity=(
                unique_judges[0].identity
                if len(unique_judges) == 1
                else {name: j.identity for name, j in judges.items()} or None
            ),
            tasks=task_info,
            seed=spec.seed,
            model_records=backend.recorded_metadata(),
            devices=_device_records(backend, judges),
        )
        stored_spec = {
            "tasks": spec.tasks,
            "task_options": spec.task_options,
            "limit": spec.limit,
            "seed": spec.seed,
            "judge_mode": spec.judge_mode,
            "self_judged": self_judged,
            # What `run_warnings` needs to give each task's warnings again from the store.
            "task_settings": {name: info["settings"] for name, info in task_info.items()},
        }
        resumed = self.store.begin_run(
            run_id, model=spec.model.raw, judge=judge_names, spec=stored_spec, provenance=prov
        )
        self.store.put_identity(backend.identity_hash, backend.identity)
        for judge in unique_judges:
            self.store.put_identity(judge.identity_hash, judge.identity)
        for task in tasks:
            data = loaded[task.name]
            self.store.put_task(run_id, task.name, len(data.samples), task_info[task.name])
            self.store.put_samples(run_id, task.name, [(s.id, s.data) for s in data.samples])
        try:
            responses = self._generate(run_id, tasks, loaded, backend)
            verdicts: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
            for judge in unique_judges:
                judged_tasks = [t for t in tasks if judges.get(t.name) is judge]
                found = self._judge(
                    run_id, judged_tasks, loaded, responses, judge, spec.max_judge_calls
                )
                verdicts.update(found)
            results = self._score(run_id, tasks, loaded, responses, verdicts)
        except BaseException:
            self.store.finish_run(run_id, status="interrupted")
            raise
        # Items left unjudged (failed requests, budget) make the run partial; re-run to finish.
        status = "partial" if self.judge_stats.unjudged else "complete"
        self.store.finish_run(run_id, status=status)
        errors: dict[str, int] = defaultdict(int)
        for judge in unique_judges:
            for kind, count in (judge.backend.error_counts() if judge.backend else {}).items():
                errors[kind] += count
        self.judge_stats.http_errors = dict(errors)
        return RunOutcome(
            run_id=run_id,
            model=spec.model.raw,
            judge=judge_names,
            tasks=results,
            # Baseline answers generated for pairwise tasks are listed only when there were any.
            calls_made={k: v for k, v in self.calls.items() if k != "baseline" or v},
            resumed=resumed,
            seconds=time.perf_counter() - started,
            status=status,
            judging=self.judge_stats.to_json() if judges else {},
            warnings=run_warnings(stored_spec, results),
            devices=prov.get("devices", {}),
        )

    # -- judges, baselines, estimates ----------------------------------------------------
    def _build_judges(self, spec: RunSpec, tasks: Sequence[Task], backend: Backend) -> dict:
        """task name -> judge. `--judge` when given, else the task's own default (e.g. rules
        for refusal), else the evaluated model itself; equal specs share one judge."""
        from evalharness.judges.factory import build_judge

        built: dict[str, Any] = {}
        judges = {}
        for task in tasks:
            if not task.needs_judge:
                continue
            judge_spec = spec.judge or task.default_judge or "self"
            if self.use_judge is not None:
                built.setdefault(judge_spec, self.use_judge)
            if judge_spec not in built:
                built[judge_spec] = build_judge(
                    judge_spec,
                    model_spec=spec.model,
                    model_backend=backend,
                    mode=spec.judge_mode,
                    base_url=spec.judge_base_url,
                    api_key_env=spec.judge_api_key_env,
                    max_new_tokens=spec.judge_max_new_tokens,
                    concurrency=spec.judge_concurrency,
                    timeout_s=spec.judge_timeout_s,
                    http_retries=spec.judge_http_retries,
                    retries=spec.judge_retries,
                    device=spec.judge_device or spec.model.device,
                )
            for protocol in task.judge_protocols():
                built[judge_spec].check_protocol(protocol)
            judges[task.name] = built[judge_spec]
        return judges

    def _attach_baseline(
        self, task: Task, data: TaskData, device: str = "auto"
    ) -> dict[str, str] | None:
        """Give a pairwise task its baseline answers: from a stored run, or generated now."""
        source = task.baseline_source()
        if not source:
            return None
        matches = [
            run_id
            for run_id in self.store.find_runs(source)
            if any(t["task"] == task.name for t in self.store.get_tasks(run_id))
        ]
        if len(matches) == 1:
            stored = self.store.get_run_responses(matches[0], task.name)
            missing = [s.id for s in data.samples if s.id not in stored]
            if missing:
                raise InputError(
                    f"baseline run {matches[0]} has no {task.name} answers for sample "
                    f"{missing[0]} ({len(missing)} missing); run the baseline on the same data"
                )
            task.attach_baseline(
                {
                    sid: {slot: result_from_json(r) for slot, r in slots.items()}
                    for sid, slots in stored.items()
                }
            )
            return {"run": matches[0]}
        if len(matches) > 1:
            raise InputError(f"--baseline {source!r} matches runs {', '.join(matches)}")
        try:
            # A baseline model runs where the evaluated one does.
            baseline_spec = parse_model_spec(source, device=device)
        except InputError:
            raise InputError(
                f"--baseline {source!r} is neither a run in {self.store.path} with task "
                f"{task.name} nor a model spec"
            ) from None
        baseline = load_backend(baseline_spec)
        answers = self._generate(None, [task], {task.name: data}, baseline, counter="baseline")
        task.attach_baseline({s.id: dict(answers[(task.name, s.id)]) for s in data.samples})
        return {"model": baseline.identity_hash, "spec": source}

    def _estimate(
        self,
        tasks: Sequence[Task],
        loaded: dict[str, TaskData],
        judges: dict[str, Any],
        budget: int | None,
    ) -> None:
        """Judge calls this run needs, said before starting (before the verdict cache, which
        makes cached items free): the calls when every verdict parses at once, and the most
        there can be when each unparseable one is asked again `judge.retries` times. Each
        judge says what one item costs (`Judge.calls_per_item`): an LLM judge in probs mode
        scores every rating 1-10, ten calls for one verdict."""
        items = first = most = 0
        for task in tasks:
            judge = judges.get(task.name)
            if judge is None:
                continue
            for sample in loaded[task.name].samples:
                for protocol, n_orders in task.planned_judge_items(sample):
                    calls = judge.calls_per_item(protocol, n_orders)
                    items += 1
                    first += calls
                    most += calls * (1 + judge.retries)
        self.judge_stats.estimated_calls = first
        self.judge_stats.max_calls = most
        if most > first:
            self.notify(
                f"judging {items} items needs {first} judge calls if every verdict parses, at "
                f"most {most} with parse retries (cached verdicts are free)"
            )
        elif first:
            self.notify(
                f"judging {items} items needs at most {first} judge calls (cached verdicts are "
                "free)"
            )
        if budget is not None and first > budget:
            self.notify(
                f"--max-judge-calls {budget} is below that: items past the budget stay "
                "unjudged and a re-run continues where this one stops"
            )
        elif budget is not None and most > budget:
            self.notify(
                f"--max-judge-calls {budget} covers every first attempt, not every parse retry: "
                "an item whose retry would pass it stays unjudged until a re-run"
            )

    # -- stages --------------------------------------------------------------------------
    def _generate(
        self,
        run_id: str | None,
        tasks: Sequence[Task],
        loaded: dict[str, TaskData],
        backend: Backend,
        counter: str = "model",
    ) -> dict[tuple[str, str], dict[str, Result]]:
        """Loop until no sample asks for a request it has no response to (multi-stage tasks).

        `run_id` None generates without linking answers to a run (a baseline's answers).
        """
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
            if run_id is not None:
                self.store.put_links(
                    run_id, [self._link(p, "response") for p in pending if p.key in cached]
                )
            misses = sorted((p for p in pending if p.key not in cached), key=_sort_key)
            if misses:
                self._execute(run_id, backend, model_hash, misses, responses, counter)

    def _execute(
        self,
        run_id: str | None,
        backend: Backend,
        model_hash: str,
        misses: list[_Pending],
        responses: dict[tuple[str, str], dict[str, Result]],
        counter: str,
    ) -> None:
        by_key: dict[str, list[_Pending]] = defaultdict(list)
        for item in misses:
            by_key[item.key].append(item)
        unique = [items[0] for items in by_key.values()]
        label = "generating" if counter == "model" else f"generating ({counter})"
        with self.progress(label, len(unique)) as advance:
            for start in range(0, len(unique), backend.batch_size):
                chunk = unique[start : start + backend.batch_size]
                results = backend.answer([p.request for p in chunk])
                if not backend.recorded:
                    self.calls[counter] += len(chunk)
                self.store.put_responses(
                    model_hash,
                    [
                        (p.key, to_jsonable(p.request), result_to_json(r))
                        for p, r in zip(chunk, results, strict=True)
                    ],
                )
                links = []
                for item, result in zip(chunk, results, strict=True):
                    for duplicate in by_key[item.key]:
                        responses[(duplicate.task, duplicate.sample_id)][duplicate.slot] = result
                        links.append(self._link(duplicate, "response"))
                if run_id is not None:
                    self.store.put_links(run_id, links)
                advance(len(chunk))

    def _judge(
        self,
        run_id: str,
        tasks: Sequence[Task],
        loaded: dict[str, TaskData],
        responses: dict[tuple[str, str], dict[str, Result]],
        judge: Any,
        budget: int | None,
    ) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
        """Judge every item not already in the verdict cache.

        A verdict that does not parse is asked again up to `judge.retries` times, then stored as
        a counted failure. An item whose request failed after the backend's own retries, or
        that would exceed the call budget, is left unjudged (not stored), so a re-run asks
        again and judges nothing twice.
        """
        verdicts: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        if judge is None:
            return verdicts
        stats = self.judge_stats
        judge_hash = judge.identity_hash
        pending: list[_JudgeEntry] = []
        for task in tasks:
            for sample in loaded[task.name].samples:
                items = task.judge_items(sample, responses[(task.name, sample.id)])
                for slot, item in items.items():
                    key_material = {
                        "item": to_jsonable(item),
                        "extra": judge.item_key_fields(item),
                    }
                    key = sha256_hex(judge_hash + canonical_json(key_material))
                    pending.append(_JudgeEntry(task.name, sample.id, slot, item, key))
        stats.items += len(pending)
        cached = self.store.get_verdicts(p.key for p in pending)
        hits = []
        for entry in pending:
            if entry.key in cached:
                verdicts[(entry.task, entry.sample_id)][entry.slot] = cached[entry.key]
                hits.append(entry.link())
        stats.cached += len(hits)
        self.store.put_links(run_id, hits)
        unique: dict[str, _JudgeEntry] = {}
        duplicates: dict[str, list[_JudgeEntry]] = defaultdict(list)
        for entry in pending:
            if entry.key not in cached:
                unique.setdefault(entry.key, entry)
                duplicates[entry.key].append(entry)
        queue: deque[tuple[_JudgeEntry, int]] = deque((e, 0) for e in unique.values())
        batch = max(JUDGE_CHUNK, judge.backend.batch_size if judge.backend else len(queue))

        def leave_unjudged(entry: _JudgeEntry, reason: str) -> None:
            for duplicate in duplicates[entry.key]:
                verdicts[(duplicate.task, duplicate.sample_id)][duplicate.slot] = unjudged_verdict(
                    reason
                )

        with self.progress("judging", len(unique)) as advance:
            while queue:
                chunk, per_item = [], []
                while queue and len(chunk) < batch:
                    entry, attempt = queue.popleft()
                    requests = judge.requests_for(entry.item, attempt)
                    spent = self.calls["judge"] + sum(len(r) for r in per_item)
                    if budget is not None and spent + len(requests) > budget:
                        stats.over_budget += 1
                        leave_unjudged(entry, f"over --max-judge-calls {budget}")
                        advance(1)
                        continue
                    chunk.append((entry, attempt))
                    per_item.append(requests)
                flat = [r for requests in per_item for r in requests]
                results = judge.backend.answer_tolerant(flat) if flat else []
                self.calls["judge"] += len(flat)
                if flat and stats.judged == 0 and all(isinstance(r, FailedResult) for r in results):
                    # Nothing has ever come back: the judge is down, not flaky. Stop loudly.
                    raise BackendError(results[0].error)  # type: ignore[union-attr]
                stored, links, cursor = [], [], 0
                for (entry, attempt), requests in zip(chunk, per_item, strict=True):
                    own = results[cursor : cursor + len(requests)]
                    cursor += len(requests)
                    failed = [r for r in own if isinstance(r, FailedResult)]
                    if failed:
                        stats.failed_requests += 1
                        leave_unjudged(entry, failed[0].error)
                        advance(1)
                        continue
                    verdict = judge.marked_verdict(entry.item, own)
                    if verdict.get("failure") and verdict.get("retryable"):
                        if attempt < judge.retries:
                            stats.parse_retries += 1
                            queue.append((entry, attempt + 1))
                            continue
                        stats.parse_failures += 1
                    verdict["attempts"] = attempt + 1
                    stats.judged += 1
                    stored.append((entry.key, to_jsonable(entry.item), verdict))
                    for duplicate in duplicates[entry.key]:
                        verdicts[(duplicate.task, duplicate.sample_id)][duplicate.slot] = verdict
                        links.append(duplicate.link())
                    advance(1)
                self.store.put_verdicts(judge_hash, stored)
                self.store.put_links(run_id, links)
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
            counts = dict(outcome.counts)
            cut = sum(
                any_truncated(responses[(task.name, s.id)].values())
                or any_truncated(verdicts[(task.name, s.id)].values())
                for s in samples
            )
            if cut:  # absent means none, as in runs stored before it was counted
                counts[TRUNCATED_COUNT] = cut
            entry = {
                "n": len(samples),
                "failures": outcome.failures,
                "metrics": outcome.metrics,
                "ci": {k: list(v) for k, v in outcome.ci.items()},
                "ci_method": {k: m for k, m in outcome.ci_method.items() if k in outcome.ci},
                "counts": counts,
            }
            self.store.put_task_metrics(run_id, task.name, entry, outcome.failures)
            results[task.name] = entry
        return results

    @staticmethod
    def _link(item: _Pending, kind: str) -> Link:
        return Link(item.task, item.sample_id, kind, item.slot, item.key)
