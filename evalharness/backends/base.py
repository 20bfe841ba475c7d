"""What every model backend offers the engine: an identity and two batched calls."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TypeVar

from evalharness.identity import HasIdentity
from evalharness.requests import (
    GenerateRequest,
    GenerateResult,
    ScoreRequest,
    ScoreResult,
)

T = TypeVar("T")


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

    @abstractmethod
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Answer chat requests; one result per request, in order."""

    @abstractmethod
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probability of each continuation given its context, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, model memory)."""
