"""Errors users can act on.

Every problem caused by input (a spec, a file, an endpoint) is raised as an `InputError` whose
message is one line naming the file, line or field; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class InputError(Exception):
    """Bad input from the user: unknown name, malformed file, missing field, bad option."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class BackendError(Exception):
    """A model or judge backend failed after its retries (unreachable endpoint, server error)."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one (`difflib`'s default cutoff), else None."""
    import difflib  # only on the error path: every command imports this module

    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean X?)` for the known name closest to a misspelt one, else nothing."""
    close = closest_name(name, known)
    return f" (did you mean {close}?)" if close else ""
