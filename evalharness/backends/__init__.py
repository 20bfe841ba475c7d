"""Model backends, chosen by a model spec's prefix (`hf:`, `vllm:`, `openai:`, `rm:`, `outputs:`,
`bon:`); `workers > 1` runs replicas of the backend as Ray actors."""

from __future__ import annotations

from evalharness.backends.base import Backend
from evalharness.backends.spec import ModelSpec


def load_backend(spec: ModelSpec) -> Backend:
    """Build the backend for a spec; weights load lazily on the first uncached request."""
    if spec.workers > 1:
        from evalharness.backends.sharded import ShardedBackend

        return ShardedBackend(spec)
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
    if spec.backend == "bon":
        from evalharness.backends.best_of_n import BestOfNBackend

        return BestOfNBackend(spec)
    raise AssertionError(f"unhandled backend {spec.backend}")


__all__ = ["Backend", "load_backend"]
