"""The judge contract: requests for a backend in, one verdict per item out.

Judges do not call their backend themselves. They say which requests an item needs and how to
read the results; the engine batches, counts, caches and resumes those calls like model calls.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from evalharness.backends.base import Backend
from evalharness.identity import HasIdentity
from evalharness.requests import Request, Result
from evalharness.tasks.base import JudgeItem


class Judge(HasIdentity):
    backend: Backend

    def item_key_fields(self, item: JudgeItem) -> dict[str, Any]:
        """Extra facts folded into an item's verdict cache key (e.g. the template's hash)."""
        return {}

    @abstractmethod
    def requests_for(self, item: JudgeItem) -> list[Request]:
        """The backend requests needed to judge `item`."""

    @abstractmethod
    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        """Read a verdict from the results; a parse failure is a verdict with `failure: True`."""
