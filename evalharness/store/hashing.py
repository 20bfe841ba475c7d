"""Content hashes for model files, memoised by (path, size, mtime).

Model identity must be known before a model is loaded, so a fully cached re-run never pays for a
model load; hashing a multi-GB checkpoint on every run would defeat that, hence the memo. Small
files (configs, tokenizers) are hashed afresh every time: that costs milliseconds, and an edit
that keeps a file's size within one tick of the file system's clock cannot hide behind the memo.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from evalharness.errors import InputError
from evalharness.store.paths import cache_root

_CHUNK = 1 << 22
#: Files at least this large are hashed once per (path, size, mtime) and remembered.
MEMO_MIN_BYTES = 64 << 20
#: Weight files by suffix: their hashes combine into `weights_sha256`.
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".gguf", ".pt", ".pth"})
#: The only files of a checkpoint directory left out of its identity: documentation, dotfiles
#: (`.gitattributes`, download metadata), trainer state (optimizer, scheduler, RNG, arguments)
#: and the records this project writes beside a checkpoint it made. None of them is read by
#: `from_pretrained` or a tokenizer, so none can change an answer. Every other file is
#: identity, so a file a future loader starts to read is covered without a change here.
#: Sub-folders (`adapter/`, `checkpoint-500/`, `runs/`) are not read by the loaders either.
NOT_IDENTITY = (
    ".*",
    "*.md",
    "LICENSE*",
    "LICENCE*",
    "NOTICE*",
    "USE_POLICY*",
    "CITATION*",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "train.json",
    "merge.json",
    "evalharness_model.json",
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def memo_sha256_file(path: Path) -> str:
    """sha256 of a file, recomputed only when its size or modification time changes."""
    return memo_sha256_files([path])[Path(path).resolve()]


def memo_sha256_files(paths: Iterable[Path]) -> dict[Path, str]:
    """sha256 of each file (keyed by its resolved path), through one read and at most one
    write of the memo file; files under `MEMO_MIN_BYTES` are hashed without it."""
    memo_file = cache_root() / "file_hashes.json"
    memo: dict[str, str] | None = None
    changed = False
    found: dict[Path, str] = {}
    for path in paths:
        path = Path(path).resolve()
        try:
            stat = path.stat()
            if stat.st_size < MEMO_MIN_BYTES:
                found[path] = sha256_file(path)
                continue
            if memo is None:
                memo = _read_memo(memo_file)
            key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
            if key not in memo:
                memo[key] = sha256_file(path)
                changed = True
        except OSError as exc:
            raise InputError(
                f"{path}: cannot read it ({exc.strerror or type(exc).__name__})"
            ) from None
        found[path] = memo[key]
    if changed and memo is not None:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo, indent=0))
        os.replace(tmp, memo_file)
    return found


def _read_memo(memo_file: Path) -> dict[str, str]:
    if not memo_file.exists():
        return {}
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return memo if isinstance(memo, dict) else {}


def is_identity_file(name: str) -> bool:
    """Whether a file of this name in a checkpoint directory is part of the model's identity."""
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in NOT_IDENTITY)


def identity_files(directory: Path) -> list[Path]:
    """The checkpoint directory's files that can change outputs (see `NOT_IDENTITY`), sorted.

    Symbolic links are followed (hub snapshots link into a blob store)."""
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and is_identity_file(p.name))


def checkpoint_hashes(directory: Path, *, weights: bool = True) -> dict[str, object]:
    """A checkpoint directory's identity: `weights_sha256`, one hash over its weight files
    (names and contents), and `files_sha256`, each other file's sha256 by name (configs,
    tokenizer files, chat template, generation defaults, adapter config, remote code...).

    `weights=False` leaves the weight files out (a caller that knows their hash already).
    """
    files = identity_files(directory)
    is_weight = {p: p.suffix in WEIGHT_SUFFIXES for p in files}
    hashed = memo_sha256_files(p for p in files if weights or not is_weight[p])
    facts: dict[str, object] = {}
    if weights:
        facts["weights_sha256"] = _combine(
            (p.name, hashed[p.resolve()]) for p in files if is_weight[p]
        )
    facts["files_sha256"] = {p.name: hashed[p.resolve()] for p in files if not is_weight[p]}
    return facts


def sha256_weights_dir(directory: Path) -> str:
    """One hash over every weight file of a checkpoint directory (names and contents)."""
    files = [p for p in identity_files(directory) if p.suffix in WEIGHT_SUFFIXES]
    hashed = memo_sha256_files(files)
    return _combine((p.name, hashed[p.resolve()]) for p in files)


def _combine(named: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, sha in named:
        digest.update(name.encode())
        digest.update(sha.encode())
    return digest.hexdigest()
