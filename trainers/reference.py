"""Reference log-probs: computed once per (reference model, tokenised data), cached on disk.

The reference never changes during a run, so scoring it every step (as peer trainers do by
default) doubles the forward cost and keeps a second model in memory. Here it is one pass over
the data before training; the sums are stored as safetensors under the cache directory, keyed
by the reference's identity and a hash of the exact token ids, and looked up by example index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from evalharness.store.paths import cache_root


def cache_path(identity: dict[str, Any], fingerprint: str) -> Path:
    key = hashlib.sha256(
        json.dumps({"reference": identity, "data": fingerprint}, sort_keys=True).encode()
    ).hexdigest()[:32]
    return cache_root() / "reference_logps" / f"{key}.safetensors"


def reference_sums(
    identity: dict[str, Any],
    fingerprint: str,
    batches: Sequence[dict[str, torch.Tensor]],
    score_batch: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """`{kind: [n_examples] float32}` from the cache, or computed with `score_batch` and stored.

    `batches` cover the examples in index order; `score_batch` returns the reference's per-example
    sums of one batch by kind (e.g. "chosen" and "rejected").
    """
    path = cache_path(identity, fingerprint)
    if path.exists():
        return load_file(path)
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in batches:
            for kind, values in score_batch(batch).items():
                parts.setdefault(kind, []).append(values.detach().float().cpu())
    sums = {kind: torch.cat(values) for kind, values in parts.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temporary file per process: concurrent writers never write into each other's file.
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in sums.items()}, str(temporary))
    temporary.replace(path)
    return sums


def batch_fingerprint(batches: Sequence[dict[str, torch.Tensor]]) -> str:
    """Hash of every batch's token ids and labels, in order (data, template and truncation)."""
    digest = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            if key.endswith("input_ids") or key.endswith("labels"):
                digest.update(key.encode())
                digest.update(batch[key].cpu().numpy().tobytes())
    return digest.hexdigest()
