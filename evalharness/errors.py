"""Errors users can act on.

Every problem caused by input (a spec, a file, an endpoint) is raised as an `InputError` whose
message is one line naming the file, line or field; the CLI prints it and exits with code 2.
"""

from __future__ import annotations


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
