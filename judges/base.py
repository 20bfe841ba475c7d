"""The judge contract: requests for a backend in, one verdict per item out.

Judges do not call their backend themselves. They say which requests an item needs and how to
read the results; the engine batches, counts, caches, retries and resumes those calls like model
calls. A judge without a backend (rules, imported annotations) asks for no requests at all.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from evalharness.backends.base import Backend
from evalharness.engine.requests import Request, Result
from evalharness.errors import InputError
from evalharness.store.hashing import sha256_file
from evalharness.store.identity import HasIdentity
from evalharness.tasks.base import PROTOCOL_LABELS, JudgeItem


def side_of(p_candidate: float) -> str:
    """Which answer a pairwise verdict favours, from P(candidate is better)."""
    if p_candidate > 0.5:
        return "candidate"
    return "baseline" if p_candidate < 0.5 else "tie"


class Judge(HasIdentity):
    backend: Backend | None = None
    #: Protocols this judge can give verdicts for (see `JudgeItem`).
    protocols: ClassVar[tuple[str, ...]] = ()
    #: How many more times an item whose verdict did not parse is asked again.
    retries: int = 0

    def check_protocol(self, protocol: str) -> None:
        """Refuse, before any work, a judge whose verdicts the task could not read.

        Both the protocol and, for a protocol with a fixed label set (`PROTOCOL_LABELS`), the
        labels: a `match` read by a refusal task would silently count as compliance.
        """
        if protocol not in self.protocols:
            raise InputError(
                f"judge {self.display_name} cannot give {protocol!r} verdicts "
                f"(it gives: {', '.join(self.protocols)})"
            )
        needed = PROTOCOL_LABELS.get(protocol)
        produced = self.labels(protocol)
        if needed is None or produced is None or set(produced) <= set(needed):
            return
        raise InputError(
            f"judge {self.display_name} gives labels {', '.join(produced)}, but a task reading "
            f"{protocol} verdicts needs {', '.join(needed)}{self.relabel_hint(protocol)}"
        )

    def labels(self, protocol: str) -> tuple[str, ...] | None:
        """Every label this judge's `protocol` verdicts can carry; None when it gives only the
        protocol's own labels by construction (an LLM or classifier judge maps onto them)."""
        return None

    def relabel_hint(self, protocol: str) -> str:
        """How to make this judge's labels fit `protocol` (appended to the error), if it can."""
        return ""

    def item_key_fields(self, item: JudgeItem) -> dict[str, Any]:
        """Extra facts folded into an item's verdict cache key (e.g. the template's hash)."""
        return {}

    def calls_per_item(self, protocol: str, n_orders: int) -> int:
        """Backend requests one item costs on its first attempt (for the pre-run estimate)."""
        return 0

    @abstractmethod
    def requests_for(self, item: JudgeItem, attempt: int = 0) -> list[Request]:
        """The backend requests needed to judge `item`; `attempt` > 0 is a retry."""

    def marked_verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        """`verdict`, with `truncated: True` when an input was cut to fit the judge model's
        context (a reward model's dialogue, an LLM judge's prompt): the verdict saw less than
        the whole answer. Stored with the verdict, so a cached one keeps saying so."""
        verdict = self.verdict(item, results)
        if any(getattr(result, "truncated", False) for result in results):
            verdict["truncated"] = True
        return verdict

    @abstractmethod
    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        """Read a verdict from the results.

        A verdict that does not parse has `failure: True` (and `retryable: True` when asking
        again could help); it is recorded and counted, never dropped.
        """


class ModelJudge(Judge):
    """A judge that is one model read directly, one call per answer (a reward model, a
    classifier): named by its spec, and as its backend's identity says, so another checkpoint
    gives new verdicts."""

    backend: Backend
    #: The `protocol` its identity names.
    kind: ClassVar[str]

    def __init__(self, backend: Backend, name: str) -> None:
        self.backend = backend
        self.name = name

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.kind, "backend": self.backend.identity}


class ImportedJudge(Judge):
    """Verdicts read from a file another judge wrote, never asked of a backend.

    It asks for no requests. A verdict is only as good as the file it came from, so the
    identity includes the file's sha256 (a corrected file gives new verdicts and a new run id)
    and the rule that matches its rows to judged items (a new rule means new verdicts).
    """

    #: The `protocol` its identity names.
    kind: ClassVar[str]
    #: How rows are matched to judged items.
    matching: ClassVar[str]

    def __init__(self, path: Path, name: str, **selects: str) -> None:
        """`selects`: what else picks this judge's rows out of the file (e.g. the model)."""
        self.path = path
        self.name = name
        self.selects = selects
        self.file_sha256 = sha256_file(path)

    @property
    def identity(self) -> dict[str, Any]:
        source = {"name": self.name, "protocol": self.kind, "file_sha256": self.file_sha256}
        return {**source, **self.selects, "matching": self.matching}

    def requests_for(self, item: JudgeItem, attempt: int = 0) -> list[Request]:
        self.check_protocol(item.protocol)
        return []
