"""What every model backend offers the engine: an identity and batched calls per request kind.

`ForwardingBackend` is the base of the backends that wrap another one and pass most request
kinds through to it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, TypeVar

from evalharness.engine.requests import (
    ClassifyRequest,
    ClassifyResult,
    CompleteRequest,
    FailedResult,
    GenerateRequest,
    GenerateResult,
    Request,
    Result,
    RewardRequest,
    RewardResult,
    ScoreRequest,
    ScoreResult,
)
from evalharness.errors import InputError
from evalharness.store.identity import HasIdentity

T = TypeVar("T")


def stop_index(text: str, stops: Sequence[str]) -> int | None:
    """Index of the first stop string in `text`, or None when none occurs."""
    found = [index for index in (text.find(s) for s in stops if s) if index >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    index = stop_index(text, stops)
    return (text, False) if index is None else (text[:index], True)


def all_results(results: Sequence[T | None]) -> list[T]:
    """Results in request order; a missing one is a bug, never silently dropped."""
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no result was produced for requests {missing}")
    return [r for r in results if r is not None]


class Backend(HasIdentity):
    """A model that answers requests in batches.

    `identity` must be computable without loading weights: the engine looks every request up in
    the store first, and a fully cached run should never load a model.
    """

    #: How many requests the engine hands over per call (and commits per step).
    batch_size: int = 8
    #: True for backends that read answers recorded elsewhere: reading them is not a call.
    recorded: bool = False

    @abstractmethod
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Answer chat requests; one result per request, in order."""

    @abstractmethod
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probability of each continuation given its context, in order."""

    def recorded_metadata(self) -> dict[str, Any] | None:
        """What a recorded-answers file said about its answers beyond their text (FastChat's
        `answer_id`, `model_id`, `tstamp`), kept in the run's provenance so `export` can give
        it back. It changes no answer, so it is not part of the identity. None for most."""
        return None

    def device_record(self) -> dict[str, Any] | None:
        """Where a local model runs (`evalharness.backends.devices.describe`: device, dtype,
        device map, card), for the run's provenance; None for models that run elsewhere (APIs,
        files)."""
        return None

    def complete(self, requests: Sequence[CompleteRequest]) -> list[GenerateResult]:
        """Continue raw-text prompts; backends without a raw-text mode refuse."""
        raise InputError(f"{self.display_name} cannot continue raw text (CompleteRequest)")

    def reward(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        """Scalar rewards; only reward-model backends have them."""
        raise InputError(f"{self.display_name} is not a reward model: it cannot score rewards")

    def classify(self, requests: Sequence[ClassifyRequest]) -> list[ClassifyResult]:
        """Label probabilities; only classifier backends have them."""
        raise InputError(f"{self.display_name} is not a classifier: it cannot classify")

    def answer(self, requests: Sequence[Request]) -> list[Result]:
        """Answer a mixed chunk: split by kind, one batched call per kind, order kept."""
        results: list[Result | None] = [None] * len(requests)
        kinds: dict[type, tuple] = {
            GenerateRequest: (self.generate, []),
            CompleteRequest: (self.complete, []),
            ScoreRequest: (self.score, []),
            RewardRequest: (self.reward, []),
            ClassifyRequest: (self.classify, []),
        }
        for index, request in enumerate(requests):
            kinds[type(request)][1].append(index)
        for call, indices in kinds.values():
            if indices:
                answers = call([requests[i] for i in indices])
                for index, result in zip(indices, answers, strict=True):
                    results[index] = result
        return all_results(results)

    def answer_tolerant(self, requests: Sequence[Request]) -> list[Result | FailedResult]:
        """Like `answer`, but a request that failed for a passing reason (server overloaded,
        timed out) becomes a `FailedResult` instead of failing the batch.

        Judges use this so one flaky request costs one unjudged item, not the run. Local models
        have no passing failures, so the default is `answer`.
        """
        return list(self.answer(requests))

    def error_counts(self) -> dict[str, int]:
        """Failed attempts by kind (e.g. `http_429`, `timeout`), retried ones included."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, model memory)."""


class ForwardingBackend(Backend):
    """A backend that hands every kind of request on to another backend, by method name.

    The wrappers (`--workers` replicas, best-of-N around a model) answer most request kinds by
    passing them through; `forward` says where to, and each kind's method is one call of it.
    """

    @abstractmethod
    def forward(self, method: str, requests: Sequence[Any]) -> list[Any]:
        """The answers of the wrapped backend's `method` (`generate`, `score`, ...)."""

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self.forward("generate", requests)

    def complete(self, requests: Sequence[CompleteRequest]) -> list[GenerateResult]:
        return self.forward("complete", requests)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.forward("score", requests)

    def reward(self, requests: Sequence[RewardRequest]) -> list[RewardResult]:
        return self.forward("reward", requests)

    def classify(self, requests: Sequence[ClassifyRequest]) -> list[ClassifyResult]:
        return self.forward("classify", requests)
