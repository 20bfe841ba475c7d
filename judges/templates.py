"""Judge prompt templates: jinja2 files `NAME.system.jinja` + `NAME.user.jinja`.

A template's hash is part of the judge's identity, so editing a prompt invalidates exactly the
verdicts it produced and nothing else.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from evalharness.engine.requests import Message, sha256_hex
from evalharness.errors import InputError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # Prompts are plain text for a model, not HTML: no escaping; missing fields are errors.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def template_hash(name: str) -> str:
    parts = []
    for role in ("system", "user"):
        path = TEMPLATE_DIR / f"{name}.{role}.jinja"
        if not path.exists():
            raise InputError(f"judge template {path.name} not found in {TEMPLATE_DIR}")
        parts.append(path.read_text())
    return sha256_hex("\n--\n".join(parts))


def render_messages(name: str, fields: dict[str, Any]) -> tuple[Message, ...]:
    env = _environment()
    try:
        system = env.get_template(f"{name}.system.jinja").render(**fields).strip()
        user = env.get_template(f"{name}.user.jinja").render(**fields).strip()
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"judge template {exc.name} not found in {TEMPLATE_DIR}") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"judge template {name}: missing field ({exc.message})") from None
    return (Message("system", system), Message("user", user))
