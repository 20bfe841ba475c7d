"""How the engine reports progress, without depending on a terminal.

The engine only ever calls `progress(description, total)` and the `advance(n)` it yields, so the
CLI can draw a rich bar, `--json` and notebooks can stay silent, and the engine itself never
imports a console library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

#: `progress(description, total)` is a context manager yielding `advance(n)`.
Progress = Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]]


@contextlib.contextmanager
def no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """The silent `Progress`: for `--json`, `--no-progress` and the Python API's default."""
    yield lambda advance: None
