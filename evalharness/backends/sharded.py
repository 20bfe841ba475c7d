"""`--workers N`: replicas of a local-model backend as Ray actors, each answering part of a batch.

The driver keeps one replica backend that is never loaded: it only computes the identity (no
weights are read for it), so every cache key and run id equals the single-process backend's and
runs with and without `--workers` share their cache. The engine hands over
`batch_size * workers` requests at a time; they are split into contiguous parts of whole
`batch_size` batches — exactly the batches a single process would have been handed, so answers
are the same, padding included — answered in parallel and returned in request order. Only the
driver writes the store (the engine does, after `answer` returns), so nothing is written twice
and SQLite sees one writer.

Ray starts on the first uncached request, never for a fully cached run. `RAY_ADDRESS` (e.g. a
cluster started with `ray start --head`) places the actors on that cluster's machines; without it
a private local instance with all this machine's CPUs is started. Each actor asks for one GPU
when the model runs on CUDA (`--device`; it loads there in the driver's resolved dtype;
`EVALHARNESS_WORKER_GPUS` overrides: e.g. `0.5` packs two replicas per GPU, `0` runs on CPUs)
and for `EVALHARNESS_WORKER_CPUS` CPUs (default: a fair share of a local machine, 1 on a
cluster); torch in the actor uses as many threads as it was given CPUs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from evalharness.backends.base import Backend, ForwardingBackend
from evalharness.backends.registry import load_single
from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import FailedResult, Request, Result
from evalharness.errors import BackendError, InputError

log = logging.getLogger(__name__)

#: Backends that hold a model in the process, the only ones replicas make faster.
LOCAL_BACKENDS = ("hf", "builtin", "vllm", "rm", "clf")
#: Seconds to wait for the actors to start (scheduling, worker processes, imports).
START_TIMEOUT_S = 600.0
#: Driver settings the replicas need on other machines (a local Ray inherits the environment).
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "EVALHARNESS_CACHE",
    "EVALHARNESS_SCORING_IMPL",
    "XDG_CACHE_HOME",
)
RAY_MISSING = "--workers needs the ray package: pip install 'evalharness[ray]'"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Replica:
    """What runs inside one Ray actor: the replica backend, built on the first call."""

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        self.spec = spec
        self.backend: Backend | None = None
        try:
            import torch

            torch.set_num_threads(max(1, threads))
        except ImportError:  # vLLM-only environments still have torch; be safe anyway
            pass

    def where(self) -> str:
        return f"pid {os.getpid()} on {socket.gethostname()}"

    def call(self, method: str, requests: Sequence[Request]) -> list[Any]:
        if self.backend is None:
            self.backend = load_single(self.spec)
        return list(getattr(self.backend, method)(requests))

    def error_counts(self) -> dict[str, int]:
        return self.backend.error_counts() if self.backend is not None else {}

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def _float_env(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name}={value!r} is not a number") from None
    if number < 0:
        raise InputError(f"{name}={value!r} must not be negative")
    return number


class ShardedBackend(ForwardingBackend):
    """`workers` replicas of `spec`'s backend as Ray actors, answering one batch together."""

    def __init__(self, spec: ModelSpec) -> None:
        if spec.backend not in LOCAL_BACKENDS:
            raise InputError(
                f"--workers is for hf:/builtin:/vllm:/rm:/clf: models, not {spec.backend}: "
                "(openai: endpoints already take --concurrency)"
            )
        if importlib.util.find_spec("ray") is None:
            raise InputError(RAY_MISSING)
        if spec.device_map is not None:
            raise InputError(
                "--device-map spreads one model over every GPU and --workers puts one replica "
                "on each: use one of them"
            )
        self.spec = spec
        self.workers = spec.workers
        # Identity only: backends compute it without loading weights (and resolve the device
        # here, so a missing one fails before a run is created).
        self._local = load_single(replace(spec, workers=1))
        self.replica_spec = self._replica_spec()
        # The replica's own batch (vllm: hands its engine bigger ones than --batch-size).
        self.replica_batch = self._local.batch_size
        self.batch_size = self.replica_batch * spec.workers
        self.recorded = self._local.recorded
        self._actors: list[Any] = []
        self._where: list[str] = []
        self._errors: Counter[str] = Counter()

    @property
    def identity(self) -> dict[str, Any]:
        return self._local.identity

    def device_record(self) -> dict[str, Any] | None:
        record = self._local.device_record()
        if record is None:
            return None
        record = {**record, "workers": self.workers}
        if self.replica_spec.device == "cuda":
            record["device"] = "cuda (one GPU per worker)"
        return record

    def _replica_spec(self) -> ModelSpec:
        """What each actor loads: the driver's resolved dtype (so every replica computes what
        the identity says), on the one GPU Ray gave it (`cuda`: Ray sets each actor's
        CUDA_VISIBLE_DEVICES, so a driver-side `cuda:1` would not exist there) or the CPU."""
        local = replace(self.spec, workers=1)
        placement = getattr(self._local, "placement", None)
        if placement is None:
            return local
        on_gpu = placement.device_type == "cuda" and self._worker_gpus() > 0
        device = "cuda" if on_gpu else placement.device_type
        if self.spec.backend == "vllm":
            device = "auto"  # vLLM places itself
        return replace(local, dtype=placement.dtype, device=device)

    def _worker_gpus(self) -> float:
        return _float_env("EVALHARNESS_WORKER_GPUS", self._default_gpus())

    @property
    def display_name(self) -> str:
        return self._local.display_name

    # -- Ray -------------------------------------------------------------------------------
    def _start(self) -> list[Any]:
        """Start (or join) Ray and the actors; runs once, on the first uncached request."""
        if self._actors:
            return self._actors
        try:
            import ray
        except ImportError:
            raise InputError(RAY_MISSING) from None
        address = os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "ignore_reinit_error": True,
                "include_dashboard": False,
                "log_to_driver": False,
            }
            if address:
                options["address"] = address
            else:  # a private instance, never a stray cluster found on this machine
                options.update(address="local", num_cpus=os.cpu_count() or 1)
            try:
                ray.init(**options)
            except Exception as exc:  # noqa: BLE001 - any start failure is one line
                raise BackendError(f"--workers: could not start Ray ({_one_line(exc)})") from None
        gpus = self._worker_gpus()
        total = ray.cluster_resources()
        cpus = _float_env(
            "EVALHARNESS_WORKER_CPUS",
            1.0 if address else max(1, int(total.get("CPU", 1)) // self.workers),
        )
        self._check_resources(total, cpus, gpus, on_cluster=bool(address))
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        threads = max(1, int(cpus))
        env.update(OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, runtime_env={"env_vars": env})(_Replica)
        actors = [remote.remote(self.replica_spec, threads) for _ in range(self.workers)]
        where = []
        for index, actor in enumerate(actors):
            try:
                where.append(ray.get(actor.where.remote(), timeout=START_TIMEOUT_S))
            except Exception as exc:  # noqa: BLE001 - named in one line below
                for started in actors:
                    ray.kill(started)
                raise BackendError(
                    f"--workers: worker {index} did not start ({self._cause(exc)}); every Ray "
                    "node needs evalharness installed in the driver's Python environment"
                ) from None
        self._actors, self._where = actors, where
        log.info("started %d workers: %s", self.workers, "; ".join(where))
        return actors

    def _default_gpus(self) -> float:
        """One GPU per actor (a vLLM one: its tensor-parallel size) when the model runs on
        CUDA (`--device` auto with a GPU, cuda, cuda:N), none when it runs on the CPU."""
        placement = getattr(self._local, "placement", None)
        if placement is None or placement.device_type != "cuda":
            return 0.0
        # A vLLM replica with tensor parallelism spans that many GPUs.
        return float(self.spec.tensor_parallel_size if self.spec.backend == "vllm" else 1)

    def _check_resources(
        self, total: dict[str, float], cpus: float, gpus: float, *, on_cluster: bool
    ) -> None:
        """Fail fast instead of waiting forever for actors that cannot be placed. A cluster may
        grow (autoscaling), so there a shortfall is only a warning."""
        short = [
            f"{need:g} {name}s but Ray has {total.get(name, 0):g}"
            for name, need in (("CPU", cpus * self.workers), ("GPU", gpus * self.workers))
            if need > total.get(name, 0) + 1e-9
        ]
        if not short:
            return
        message = f"--workers {self.workers} needs {'; '.join(short)}"
        if on_cluster:
            log.warning("%s; the actors wait until the cluster has them", message)
            return
        raise InputError(
            f"{message}: use fewer workers, or set EVALHARNESS_WORKER_CPUS / "
            "EVALHARNESS_WORKER_GPUS (per worker), or RAY_ADDRESS for a cluster"
        )

    @staticmethod
    def _cause(exc: BaseException) -> str:
        """The error raised inside the actor, not Ray's wrapper with its traceback."""
        cause = getattr(exc, "cause", None)
        return _one_line(cause if isinstance(cause, BaseException) else exc)

    # -- calls -----------------------------------------------------------------------------
    def parts(self, n: int) -> list[tuple[int, int]]:
        """Contiguous [start, end) parts, at most one per worker, each whole `batch_size`
        batches (the last may be short): the batches one process would have been handed."""
        batch = self.replica_batch
        step = batch * max(1, math.ceil(n / (batch * self.workers)))
        return [(start, min(start + step, n)) for start in range(0, n, step)]

    def forward(self, method: str, requests: Sequence[Any]) -> list[Any]:
        """`method` on the replicas: each answers one contiguous part, in request order."""
        if not requests:
            return []
        import ray

        actors = self._start()
        parts = self.parts(len(requests))
        refs = [
            actors[index].call.remote(method, list(requests[start:end]))
            for index, (start, end) in enumerate(parts)
        ]
        results: list[Any] = []
        for index, ref in enumerate(refs):
            try:
                results.extend(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - re-raised as one line
                cause = getattr(exc, "cause", None)
                if isinstance(cause, InputError):  # the request, not the worker, is at fault
                    raise InputError(str(cause)) from None
                raise BackendError(
                    f"worker {index} ({self._where[index]}) failed on {method}: {self._cause(exc)}"
                ) from None
        if len(results) != len(requests):
            raise RuntimeError(f"workers returned {len(results)} results for {len(requests)}")
        return results

    def answer(self, requests: Sequence[Request]) -> list[Result]:
        return self.forward("answer", requests)

    def answer_tolerant(self, requests: Sequence[Request]) -> list[Result | FailedResult]:
        return self.forward("answer_tolerant", requests)

    def error_counts(self) -> dict[str, int]:
        """Summed over the workers; what closed workers reported is kept."""
        counts = Counter(self._errors)
        if self._actors:
            import ray

            for found in ray.get([a.error_counts.remote() for a in self._actors]):
                counts.update(found)
        return dict(counts)

    def close(self) -> None:
        """Kill the actors (their models go with them); Ray itself stays up for reuse."""
        if self._actors:
            import ray

            with contextlib.suppress(Exception):  # a dead worker has nothing to report
                self._errors = Counter(self.error_counts())
            for actor in self._actors:
                ray.kill(actor)
        self._actors, self._where = [], []
        self._local.close()
