"""Jinja templates of a declarative task: sandboxed, strict, and errors that say where.

Templates come from a user's task.yaml, so they run in jinja's sandbox (no attribute tricks
reach Python internals) with `StrictUndefined`: a field a row lacks is an error naming the
template's line in task.yaml and the row, never an empty string in a prompt. The environment
matches lm-evaluation-harness's (`keep_trailing_newline`, the `regex_replace` filter), so a
ported `doc_to_text` renders the same text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evalharness.errors import InputError

#: Exceptions a template can raise while rendering a row (beyond jinja's own): a filter given
#: the wrong type, an index past a list's end, ... All are the row's or the template's fault.
RENDER_ERRORS = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    ZeroDivisionError,
)


def _regex_replace(value: str, pattern: str = "", replacement: str = "", count: int = 0) -> str:
    """lm-eval's `regex_replace` filter, so its templates port unchanged."""
    return re.sub(pattern, replacement, value, count=count)


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = _regex_replace
    return env


@dataclass(frozen=True)
class Template:
    """A compiled template and where it was written (`file:line` and the field's name)."""

    source: str
    where: str
    field: str

    def compiled(self) -> jinja2.Template:
        return _compile(self.source, self.where, self.field)

    def render(self, row: Mapping[str, Any], row_where: str) -> str:
        try:
            return self.compiled().render(**row)
        except RENDER_ERRORS as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise InputError(
                f"{self.where}: field {self.field!r}: {message} (rendering row {row_where})"
            ) from None

    def render_value(self, row: Mapping[str, Any], row_where: str) -> str:
        """lm-eval's `doc_to_text` rule: text that is exactly the name of one of the row's
        fields stands for that field's value; anything else renders as a template."""
        if self.source in row:
            return str(row[self.source])
        return self.render(row, row_where)


def compile_template(source: str, where: str, field: str) -> Template:
    """Check a template's syntax now, so a typo fails before any data is read."""
    _compile(source, where, field)
    return Template(source, where, field)


@lru_cache(maxsize=256)
def _compile(source: str, where: str, field: str) -> jinja2.Template:
    try:
        return environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(
            f"{where}: field {field!r}: invalid template ({exc.message}, template line "
            f"{exc.lineno})"
        ) from None
