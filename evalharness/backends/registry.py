"""Which class answers each kind of model spec, and building one of them in this process.

The table is the one place a new backend is added (`hf:`, `vllm:`, `openai:`, ...). It is kept
apart from `loader.load_backend` because the backends that wrap others (`--workers` replicas
in `sharded.py`, best-of-N's sampled model and scorer in `best_of_n.py`) build what they wrap
from here: importing the loader, which imports them, would make a cycle.
"""

from __future__ import annotations

import importlib

from evalharness.backends.base import Backend
from evalharness.backends.spec import ModelSpec

#: Spec prefix -> (module, class) of the backend that runs it in this process. Imported on use:
#: transformers, vLLM and the OpenAI client are heavy, and only one of them is needed per spec.
SINGLE_PROCESS: dict[str, tuple[str, str]] = {
    "hf": ("evalharness.backends.hf", "HFBackend"),
    "builtin": ("evalharness.backends.hf", "HFBackend"),
    "vllm": ("evalharness.backends.vllm", "VLLMBackend"),
    "openai": ("evalharness.backends.openai_api", "OpenAIBackend"),
    "rm": ("evalharness.backends.reward", "RewardModelBackend"),
    "clf": ("evalharness.backends.reward", "RewardModelBackend"),
    "outputs": ("evalharness.backends.outputs", "OutputsBackend"),
}


def load_single(spec: ModelSpec) -> Backend:
    """The backend that runs `spec` in this process (`spec.workers` is not looked at)."""
    if spec.backend not in SINGLE_PROCESS:
        raise AssertionError(f"unhandled backend {spec.backend}")
    module, name = SINGLE_PROCESS[spec.backend]
    backend_class: type[Backend] = getattr(importlib.import_module(module), name)
    return backend_class(spec)
