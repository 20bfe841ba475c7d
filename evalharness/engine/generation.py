"""Model answers through the response cache: plan each task's requests, answer only the misses.

A response is cached under the model's identity hash plus the canonical request, so the same
prompt with the same settings is answered once per model, across tasks and across runs. Each
batch is written to the store as soon as it is answered: a re-run of the same command makes no
model call, and an interrupted run resumes with only the missing answers. Multi-stage tasks (a
second turn that needs the first answer) are planned again until no sample asks for anything new.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from evalharness.backends import Backend
from evalharness.engine.progress import Progress
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateRequest,
    Request,
    ScoreRequest,
    canonical_json,
    result_from_json,
    result_to_json,
    sha256_hex,
    to_jsonable,
)
from evalharness.engine.run_types import Responses, SlotWork
from evalharness.store.run_store import RunStore
from evalharness.tasks.base import Task, TaskData

#: One request a sample still needs an answer to, with its cache key.
_Pending = SlotWork[Request]
#: Score requests handed to the backend per call, in multiples of its batch size: enough for
#: it to batch rows of similar length across samples, few enough to store answers as it goes.
SCORE_BATCHES_PER_CALL = 32


def response_key(model_hash: str, request: Request) -> str:
    """The cache key of `request` answered by the model whose identity hash is `model_hash`."""
    return sha256_hex(model_hash + canonical_json(request))


def _sort_key(item: _Pending) -> tuple:
    """Group equal sampling settings and similar lengths so batches stay full and unpadded."""
    request = item.work
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
        # Requests sharing a context sit together, so a call holds whole groups of choices.
        messages = repr(request.messages) if request.messages else ""
        return (1, len(messages) + len(request.context), messages, request.context)
    return (2,)


def _calls(backend: Backend, unique: list[_Pending]) -> list[list[_Pending]]:
    """`unique` (sorted by `_sort_key`) cut into backend calls: `batch_size` requests, except
    that score requests go `SCORE_BATCHES_PER_CALL` batches at a time, so the backend batches
    them across samples and finds the continuations that share a context."""
    calls: list[list[_Pending]] = []
    scored = [p for p in unique if isinstance(p.work, ScoreRequest)]
    others = [p for p in unique if not isinstance(p.work, ScoreRequest)]
    for items, size in (
        (others, backend.batch_size),
        (scored, backend.batch_size * SCORE_BATCHES_PER_CALL),
    ):
        calls.extend(items[start : start + size] for start in range(0, len(items), size))
    return calls


def generate(
    store: RunStore,
    backend: Backend,
    tasks: Sequence[Task],
    loaded: dict[str, TaskData],
    *,
    run_id: str | None,
    progress: Progress,
    calls: dict[str, int],
    counter: str = "model",
) -> Responses:
    """Every answer the tasks' samples ask for, from the cache or from `backend`.

    Loops until no sample asks for a request it has no response to (multi-stage tasks).
    `run_id` None generates without linking answers to a run (a baseline's answers). Calls
    actually made to the backend are added to `calls[counter]`.
    """
    model_hash = backend.identity_hash
    responses: Responses = defaultdict(dict)
    while True:
        pending = [
            SlotWork(task.name, sample.id, slot, request, response_key(model_hash, request))
            for task in tasks
            for sample in loaded[task.name].samples
            for slot, request in task.requests(sample, responses[(task.name, sample.id)]).items()
            if slot not in responses[(task.name, sample.id)]
        ]
        if not pending:
            return responses
        cached = store.get_responses(p.key for p in pending)
        for item in pending:
            if item.key in cached:
                responses[(item.task, item.sample_id)][item.slot] = result_from_json(
                    cached[item.key]
                )
        if run_id is not None:
            store.put_links(run_id, [p.link("response") for p in pending if p.key in cached])
        misses = sorted((p for p in pending if p.key not in cached), key=_sort_key)
        if misses:
            _answer(store, backend, misses, responses, run_id, progress, calls, counter)


def _answer(
    store: RunStore,
    backend: Backend,
    misses: list[_Pending],
    responses: Responses,
    run_id: str | None,
    progress: Progress,
    calls: dict[str, int],
    counter: str,
) -> None:
    """Answer each distinct missing request once, in backend-sized batches, storing each batch
    (and linking every sample that asked for it) before the next starts."""
    model_hash = backend.identity_hash
    by_key: dict[str, list[_Pending]] = defaultdict(list)
    for item in misses:
        by_key[item.key].append(item)
    unique = [items[0] for items in by_key.values()]
    label = "generating" if counter == "model" else f"generating ({counter})"
    with progress(label, len(unique)) as advance:
        for chunk in _calls(backend, unique):
            results = backend.answer([p.work for p in chunk])
            if not backend.recorded:
                calls[counter] += len(chunk)
            store.put_responses(
                model_hash,
                [
                    (p.key, to_jsonable(p.work), result_to_json(r))
                    for p, r in zip(chunk, results, strict=True)
                ],
            )
            links = []
            for item, result in zip(chunk, results, strict=True):
                for duplicate in by_key[item.key]:
                    responses[(duplicate.task, duplicate.sample_id)][duplicate.slot] = result
                    links.append(duplicate.link("response"))
            if run_id is not None:
                store.put_links(run_id, links)
            advance(len(chunk))
