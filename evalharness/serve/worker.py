"""The one thread that runs the served model, batching whatever requests are waiting.

The model is not thread-safe and a forward pass over one short prompt leaves most of the hardware
idle, so HTTP handlers never touch it: they queue a job and wait for its result. The worker takes
every job waiting (up to `max_batch`, after a short `window_s` for stragglers) and runs them
together: generation jobs with the same sampling settings are one left-padded `generate` call, and
scoring jobs one right-padded forward pass (`logprobs.batch_logprobs`). This is dynamic batching,
not continuous batching: a batch runs to the end before the next one starts, which is what
`transformers.generate` allows.

Streaming jobs run alone (a transformers streamer follows one sequence); their tokens are handed to
the waiting handler as they are generated.

A sampled request without a seed draws a fresh seed (per batch), as OpenAI and vLLM sample afresh;
one with a seed runs alone, so its draw never depends on which other requests were waiting.

`shutdown` (the server's SIGINT/SIGTERM) stops a running generation at its next forward pass and
fails every request in flight with a 503, so stopping the server never waits for a long answer.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from evalharness.backends.hf import HFBackend
from evalharness.engine.requests import SamplingParams
from evalharness.serve.logprobs import TokenLogprob, batch_logprobs
from evalharness.serve.schema import APIError

#: Most tokens (rows x padded width) in one scoring forward; larger batches are split.
MAX_BATCH_TOKENS = 16384


@dataclass
class _GenerateJob:
    prompt_ids: list[int]
    sampling: SamplingParams
    n: int
    #: False: the client gave no seed; `sampling.seed` is ignored and a fresh one is drawn.
    seeded: bool = True
    future: Future = field(default_factory=Future)


@dataclass
class _ScoreJob:
    ids: list[int]
    start: int
    top_k: int
    future: Future = field(default_factory=Future)


@dataclass
class _StreamJob:
    prompt_ids: list[int]
    sampling: SamplingParams
    seeded: bool = True
    tokens: queue.Queue = field(default_factory=queue.Queue)
    #: Set when the reader stops early (client gone, stop string found): generation ends.
    cancelled: threading.Event = field(default_factory=threading.Event)


class _Cancelled(Exception):
    """Raised inside `generate` by the streamer to end a generation nobody reads any more."""


class ShuttingDown(APIError):
    """The server is stopping: the request in flight (or arriving) is answered with a 503."""

    def __init__(self) -> None:
        super().__init__(
            503, "the server is shutting down", type_="server_error", code="server_shutting_down"
        )


#: Put on a stream's queue after its last token; an exception is put there instead on failure.
_END = object()


@dataclass
class WorkerStats:
    """How requests were grouped: `largest_batch` > 1 shows concurrent requests shared a pass."""

    jobs: int = 0
    batches: int = 0
    largest_batch: int = 0


class ModelWorker:
    """Runs every model call of a server on one thread, batching the jobs that wait together."""

    def __init__(self, backend: HFBackend, *, max_batch: int = 32, window_s: float = 0.002):
        self.backend = backend
        self.max_batch = max_batch
        self.window_s = window_s
        self.stats = WorkerStats()
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        #: 1 while the worker holds a job it took but has not started (see `pending`).
        self._in_hand = 0
        #: Set by `shutdown`; checked before every forward pass the model makes.
        self._stopping = threading.Event()
        #: Orders submissions against `shutdown`, so no job is queued after the last is failed.
        #: Re-entrant: `shutdown` runs in a signal handler, which may interrupt its own thread.
        self._submit_lock = threading.RLock()

    # -- what handlers call (any thread) -----------------------------------------------------
    def submit_generate(
        self, prompt_ids: list[int], sampling: SamplingParams, n: int = 1, *, seeded: bool = True
    ) -> Future:
        """`n` generations for one prompt; the future gives `[(new ids, finish reason)] * n`,
        the ids ending with the stop token when one ended the row (finish reason "stop").
        Submit every prompt of a request before waiting on any, so they batch. With
        `seeded=False` a sampled generation ignores `sampling.seed` and draws a fresh one."""
        return self._submit(_GenerateJob(prompt_ids, sampling, n, seeded))

    def submit_score(self, ids: list[int], start: int, top_k: int) -> Future:
        """Log-probabilities of `ids[start:]`, each given all tokens before it."""
        if start < 1:
            raise ValueError("the first token has no prefix to be scored against")
        if start >= len(ids):
            done: Future = Future()
            done.set_result([])
            return done
        return self._submit(_ScoreJob(ids, start, top_k))

    def stream(
        self, prompt_ids: list[int], sampling: SamplingParams, *, seeded: bool = True
    ) -> Iterator[int]:
        """New token ids as they are generated (the stop token is not yielded)."""
        job = _StreamJob(prompt_ids, sampling, seeded)
        self._enqueue(job)
        try:
            while True:
                item = job.tokens.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Queue jobs without running them until the block ends (then they run as one batch).

        For tests and benchmarks that need to know which requests share a batch; a batch that
        is already running finishes first.
        """
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def pending(self) -> int:
        """Jobs queued and not yet started."""
        return self._jobs.qsize() + self._in_hand

    def close(self) -> None:
        """Stop the thread after the jobs already queued."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def shutdown(self) -> None:
        """Stop now: the running batch ends at its next forward pass, and it, every queued job
        and every later submission fail with `ShuttingDown`. Returns at once (it runs in a
        signal handler); the worker thread fails the jobs and ends."""
        with self._submit_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self._open.set()  # a `held()` queue must not hold the shutdown up
            if self._thread is not None:
                self._jobs.put(None)

    def _submit(self, job: _GenerateJob | _ScoreJob) -> Future:
        self._enqueue(job)
        return job.future

    def _enqueue(self, job: Any) -> None:
        with self._submit_lock:
            if self._stopping.is_set():
                raise ShuttingDown
            self._ensure_started()
            self._jobs.put(job)

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="evalharness-model", daemon=True
                )
                self._thread.start()

    # -- the worker thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._open.wait()
            first = self._jobs.get()
            if first is None:
                return
            self._in_hand = 1
            self._open.wait()
            jobs = [first, *self._collect_more()]
            self._in_hand = 0
            stop = None in jobs
            jobs = [job for job in jobs if job is not None]
            self.stats.jobs += len(jobs)
            if self._stopping.is_set():
                for job in jobs:
                    _fail(job, ShuttingDown())
            else:
                with self._stoppable():
                    self._run(jobs)
            if stop:
                return

    @contextlib.contextmanager
    def _stoppable(self) -> Iterator[None]:
        """While a batch runs, every forward pass of the model first checks for `shutdown`.

        `generate` has no way to be interrupted from outside; raising from a pre-forward hook
        ends it between two tokens, and the exception fails the batch's requests. The hook is
        on the input embeddings, which every step runs even when a wrapper (PEFT) calls the
        inner model's forward rather than its own.
        """

        def check(*_: Any) -> None:
            if self._stopping.is_set():
                raise ShuttingDown

        model = self.backend.model
        try:
            module = model.get_input_embeddings()
        except (AttributeError, NotImplementedError):
            module = model
        handle = module.register_forward_pre_hook(check)
        try:
            yield
        finally:
            handle.remove()

    def _collect_more(self) -> list[Any]:
        """Jobs that arrive within the window (or were already waiting), up to `max_batch`."""
        found: list[Any] = []
        deadline = time.monotonic() + self.window_s
        while len(found) + 1 < self.max_batch:
            try:
                found.append(self._jobs.get(timeout=max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                break
            if found[-1] is None:
                break
        return found

    def _run(self, jobs: list[Any]) -> None:
        streams = [job for job in jobs if isinstance(job, _StreamJob)]
        scores = [job for job in jobs if isinstance(job, _ScoreJob)]
        groups: dict[Hashable, list[_GenerateJob]] = {}
        for job in jobs:
            if isinstance(job, _GenerateJob):
                groups.setdefault(_batch_key(job), []).append(job)
        for group in groups.values():
            self._guarded(group, self._run_generate)
        for batch in _token_budget_batches(scores):
            self._guarded(batch, self._run_score)
        for job in streams:
            self._run_stream(job)

    def _guarded(self, jobs: Sequence[Any], run: Any) -> None:
        """Run a batch; its failure fails each of its requests, never the worker."""
        self._count_batch(sum(getattr(job, "n", 1) for job in jobs))
        try:
            run(jobs)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)

    def _count_batch(self, rows: int) -> None:
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, rows)

    def _run_generate(self, jobs: Sequence[_GenerateJob]) -> None:
        prompts = [job.prompt_ids for job in jobs for _ in range(job.n)]
        sampling = _drawn(jobs[0].sampling, jobs[0].seeded)
        outputs = self.backend.generate_ids(prompts, sampling, keep_stop_token=True)
        offset = 0
        for job in jobs:
            job.future.set_result(outputs[offset : offset + job.n])
            offset += job.n

    def _run_score(self, jobs: Sequence[_ScoreJob]) -> None:
        results = batch_logprobs(
            self.backend, [(job.ids, job.start) for job in jobs], max(j.top_k for j in jobs)
        )
        for job, scored in zip(jobs, results, strict=True):
            trimmed = [
                TokenLogprob(s.token_id, s.logprob, s.top[: job.top_k])
                if job.top_k
                else TokenLogprob(s.token_id, s.logprob, ())
                for s in scored
            ]
            job.future.set_result(trimmed)

    def _run_stream(self, job: _StreamJob) -> None:
        if job.cancelled.is_set():
            return
        self._count_batch(1)
        try:
            sampling = _drawn(job.sampling, job.seeded)
            self.backend.generate_ids([job.prompt_ids], sampling, streamer=_QueueStreamer(job))
            job.tokens.put(_END)
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            job.tokens.put(exc)


def _batch_key(job: _GenerateJob) -> Hashable:
    """Jobs with equal keys run as one `generate` call.

    Greedy jobs ignore the seed. Unseeded sampled jobs share a fresh draw. A seeded sampled job
    runs alone: the rows of a batch share one random stream, so batched with others its answer
    would depend on what else was waiting, and the same seed would not give the same text.
    """
    if job.sampling.greedy:
        return replace(job.sampling, seed=0)
    if not job.seeded:
        return (replace(job.sampling, seed=0), "fresh")
    return id(job)


def _drawn(sampling: SamplingParams, seeded: bool) -> SamplingParams:
    """`sampling`, with a fresh random seed when the client gave none and it samples."""
    if seeded or sampling.greedy:
        return sampling
    return replace(sampling, seed=secrets.randbits(63))


def _fail(job: Any, exc: BaseException) -> None:
    """Answer a job that will not run with `exc`."""
    if isinstance(job, _StreamJob):
        job.tokens.put(exc)
    elif not job.future.done():
        job.future.set_exception(exc)


class _QueueStreamer:
    """A transformers streamer that queues each new token id (the prompt, sent first, is not)."""

    def __init__(self, job: _StreamJob) -> None:
        self._job = job
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._job.cancelled.is_set():
            raise _Cancelled
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self._job.tokens.put(int(token))

    def end(self) -> None:
        """`generate` calls this when done; the worker queues the end after the call returns."""


def _token_budget_batches(jobs: list[_ScoreJob]) -> Iterator[list[_ScoreJob]]:
    """Jobs sorted by length, cut so that no forward pass exceeds MAX_BATCH_TOKENS."""
    batch: list[_ScoreJob] = []
    for job in sorted(jobs, key=lambda j: len(j.ids)):
        if batch and (len(batch) + 1) * len(job.ids) > MAX_BATCH_TOKENS:
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch
