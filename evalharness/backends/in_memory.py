"""An `hf:` backend over a model already in memory: evaluating inside a training loop.

Writing a checkpoint every N steps only to read it back is slow and fills disks; this backend
runs the live `transformers` model and tokenizer directly, through the same batching, chat
template and decoding code as `HFBackend`, so its answers are the answers a saved checkpoint of
the same weights gives.

The cache key must change whenever the weights do, so the identity hashes the parameters and
buffers (names, dtypes, shapes and bytes) each time a backend is built: a few seconds per
billion parameters, paid once per evaluation, not per request. The model's config and the
tokenizer are hashed too, as a checkpoint's config.json and tokenizer files are.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from evalharness.backends.hf import HFBackend
from evalharness.backends.local_model import Placement
from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import canonical_json, sha256_hex
from evalharness.store.hashing import checkpoint_hashes
from evalharness.store.weights_fingerprint import state_sha256


def tokenizer_sha256(tokenizer: Any) -> str:
    """One hash over the files `save_pretrained` writes for this tokenizer: everything a
    saved checkpoint's tokenizer would be identified by (vocabulary, merges, special and added
    tokens, normaliser, chat template)."""
    with tempfile.TemporaryDirectory(prefix="evalharness-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        return sha256_hex(canonical_json(checkpoint_hashes(Path(folder))))


class InMemoryHFBackend(HFBackend):
    """`HFBackend` over a live model and tokenizer; nothing is loaded or written."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int = 8) -> None:
        first = next(model.parameters())
        dtype = str(first.dtype).removeprefix("torch.")
        self.spec = ModelSpec(
            backend="hf", name=name, raw=f"memory:{name}", dtype=dtype, batch_size=batch_size
        )
        self.batch_size = batch_size
        self.directory = None
        # Padding is set before hashing: the tokenizer is the caller's, and a second evaluation
        # of the same model must see (and hash) it as the first one left it.
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        template = getattr(tokenizer, "chat_template", None)
        generation = getattr(model, "generation_config", None)
        config = getattr(model, "config", None)
        self._identity = {
            "backend": "hf",
            "name": self.spec.raw,
            "weights_sha256": state_sha256(model),
            "dtype": dtype,
            # config.json and the tokenizer files change answers as the weights do (context
            # length, rope scaling, special tokens, normalisation).
            "config_sha256": sha256_hex(config.to_json_string()) if config is not None else None,
            "tokenizer_sha256": tokenizer_sha256(tokenizer),
            "chat_template_sha256": sha256_hex(template) if template else None,
            "generation_config_sha256": (
                sha256_hex(generation.to_json_string()) if generation is not None else None
            ),
        }
        self._model = model
        self._tokenizer = tokenizer
        self._prompts = None
        # It stays where its caller put it (its first device); provenance says where.
        self.placement = Placement(str(getattr(model, "device", first.device)), dtype)

    def _load(self) -> None:
        """Already loaded: the model and tokenizer were given."""
