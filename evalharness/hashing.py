"""Content hashes for model files, memoised by (path, size, mtime).

Model identity must be known before a model is loaded, so a fully cached re-run never pays for a
model load; hashing a multi-GB checkpoint on every run would defeat that, hence the memo.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from evalharness.paths import cache_root

_CHUNK = 1 << 22


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def memo_sha256_file(path: Path) -> str:
    """sha256 of a file, recomputed only when its size or modification time changes."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_file = cache_root() / "file_hashes.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo: dict[str, str] = {}
    if memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, json.JSONDecodeError):
            memo = {}
    if key in memo:
        return memo[key]
    digest = sha256_file(path)
    memo[key] = digest
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(memo, indent=0))
    os.replace(tmp, memo_file)
    return digest


def sha256_weights_dir(directory: Path) -> str:
    """One hash over every weight file of a checkpoint directory (names and contents)."""
    files = sorted(
        p
        for p in Path(directory).iterdir()
        if p.suffix in {".safetensors", ".bin", ".gguf", ".pt"} and p.is_file()
    )
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(memo_sha256_file(file).encode())
    return digest.hexdigest()
