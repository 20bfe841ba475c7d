"""Things whose outputs are cached by identity: model backends and judges."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from evalharness.engine.requests import canonical_json, sha256_hex


class HasIdentity(ABC):
    """An identity dict that names everything changing the outputs, and its hash (cache keys)."""

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes what this thing outputs; never secrets such as API keys."""

    @property
    def identity_hash(self) -> str:
        return sha256_hex(canonical_json(self.identity))

    @property
    def display_name(self) -> str:
        return str(self.identity.get("name", type(self).__name__))
