"""Which class answers each kind of model spec, and building one of them in this process.

This is the one place a new backend is added (`hf:`, `vllm:`, `openai:`, ...). It is kept
apart from `loader.load_backend` because the backends that wrap others (`--workers` replicas
in `sharded.py`, best-of-N's sampled model and scorer in `best_of_n.py`) build what they wrap
from here: importing the loader, which imports them, would make a cycle.
"""

from __future__ import annotations

from evalharness.backends.base import Backend
from evalharness.backends.spec import ModelSpec


def load_single(spec: ModelSpec) -> Backend:
    """The backend that runs `spec` in this process (`spec.workers` is not looked at).

    Each class is imported on use: transformers, vLLM and the OpenAI client are heavy, and only
    one of them is needed per spec.
    """
    if spec.backend in ("hf", "builtin"):
        from evalharness.backends.hf import HFBackend

        return HFBackend(spec)
    if spec.backend == "vllm":
        from evalharness.backends.vllm import VLLMBackend

        return VLLMBackend(spec)
    if spec.backend == "openai":
        from evalharness.backends.openai_api import OpenAIBackend

        return OpenAIBackend(spec)
    if spec.backend in ("rm", "clf"):
        from evalharness.backends.reward import RewardModelBackend

        return RewardModelBackend(spec)
    if spec.backend == "outputs":
        from evalharness.backends.outputs import OutputsBackend

        return OutputsBackend(spec)
    raise AssertionError(f"unhandled backend {spec.backend}")
