"""Model backends, chosen by a model spec's prefix (`hf:`, `vllm:`, `openai:`, `rm:`, `outputs:`,
`bon:`); `workers > 1` runs replicas of the backend as Ray actors.

`registry.py` names the class of each prefix, `loader.py` builds any spec (the wrappers too).
"""

from __future__ import annotations

from evalharness.backends.base import Backend
from evalharness.backends.loader import load_backend

__all__ = ["Backend", "load_backend"]
