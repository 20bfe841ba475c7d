"""A declarative task's rows: from a file next to task.yaml or from the hub, with locations.

Each row comes with a location (`file:line` for JSONL/CSV, `file[index]` for a JSON list or
Parquet, `hub-id[index]`) so that a template that fails on a row names it. The data hash covers
task.yaml's text and the data's bytes (a file) or its rows (the hub): editing either changes
the run id, so cached results are never mixed across versions of a task.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import input_file, read_records

from .loader import TaskSpec

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_rows(spec: TaskSpec, override: str | None = None) -> tuple[list[tuple[str, dict]], str]:
    """(location, row) pairs in file order, and the hash of task.yaml plus the data.

    `override` (the task option `data`) replaces `data.path` with another file.
    """
    digest = hashlib.sha256(spec.text.encode("utf-8"))
    if override is not None or spec.data.path is not None:
        path = Path(override).expanduser() if override else spec.data.path
        assert path is not None
        rows = _read_file(spec, path, override is not None)
        digest.update(b"\n--data--\n" + path.read_bytes())
    else:
        rows = _read_hub(spec)
        digest.update(b"\n--hub--\n" + json.dumps([r for _, r in rows], default=str).encode())
    if not rows:
        raise InputError(f"{spec.lines.where('data')}: field 'data': no rows")
    return rows, digest.hexdigest()


def _read_file(spec: TaskSpec, path: Path, from_option: bool) -> list[tuple[str, dict]]:
    option = f"{spec.name}.data" if from_option else None
    where = f"{spec.lines.where('data', 'path')}: field 'data.path'"
    if not from_option and not path.is_file():
        state = "is a directory, expected a file" if path.is_dir() else "no such file"
        raise InputError(f"{where}: {path} {state}")
    path = input_file(path, option)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{where if not from_option else option}: {path}: unsupported file type "
            f"{suffix or '(none)'!r}; use {', '.join(SUFFIXES)}"
        )
    if suffix == ".parquet":
        return _read_parquet(path)
    return read_records(path, option)


def _read_parquet(path: Path) -> list[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    return [(f"{path}[{index}]", row) for index, row in enumerate(rows)]


def _read_hub(spec: TaskSpec) -> list[tuple[str, dict[str, Any]]]:
    """A hub dataset through `datasets` (its cache works offline once downloaded)."""
    data = spec.data
    try:
        import datasets

        loaded = datasets.load_dataset(
            data.hub, data.config, split=data.split, revision=data.revision
        )
    except Exception as exc:  # noqa: BLE001 - offline, missing, auth: one actionable line
        raise InputError(
            f"{spec.lines.where('data', 'hub')}: field 'data.hub': cannot load {data.hub!r} "
            f"split {data.split!r} ({type(exc).__name__}); download it once online, or use "
            "data.path with a local file"
        ) from None
    return [(f"{data.hub}[{index}]", dict(row)) for index, row in enumerate(loaded)]
