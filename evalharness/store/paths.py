"""Where evalharness keeps its caches and its default run store."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Converted models and file-hash memo; override with EVALHARNESS_CACHE."""
    root = os.environ.get("EVALHARNESS_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "evalharness"


def default_store_path() -> Path:
    """The run store: EVALHARNESS_STORE, else `evalharness.sqlite` in the working directory.

    A store next to the project (not in a home cache) is what CI jobs upload as an artifact.
    """
    return Path(os.environ.get("EVALHARNESS_STORE", "evalharness.sqlite"))
