"""`load_backend`: the backend for any model spec, the wrappers included.

A spec with `workers > 1` runs as Ray replicas (`sharded.py`), a `bon:` spec as best-of-N
around another model (`best_of_n.py`), `urial:`, `args:` and `deal:` as the tuning-free
wrappers of `urial.py`, `args_decoding.py` and `deal.py`; everything else is one backend in
this process (`registry.py`). The wrappers build what they wrap from the registry, never from
here, so nothing imports this module back.
"""

from __future__ import annotations

from evalharness.backends.base import Backend
from evalharness.backends.registry import load_single
from evalharness.backends.spec import ModelSpec


def load_backend(spec: ModelSpec) -> Backend:
    """Build the backend for a spec; weights load lazily on the first uncached request."""
    if spec.workers > 1:
        from evalharness.backends.sharded import ShardedBackend

        return ShardedBackend(spec)
    if spec.backend == "bon":
        from evalharness.backends.best_of_n import BestOfNBackend

        return BestOfNBackend(spec)
    if spec.backend == "urial":
        from evalharness.backends.urial import UrialBackend

        return UrialBackend(spec)
    if spec.backend == "args":
        from evalharness.backends.args_decoding import ArgsBackend

        return ArgsBackend(spec)
    if spec.backend == "deal":
        from evalharness.backends.deal import DealBackend

        return DealBackend(spec)
    return load_single(spec)
