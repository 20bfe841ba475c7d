"""The run store: one SQLite file (WAL) holding runs, samples, cached responses and verdicts.

Responses and verdicts are content-addressed: the key is a hash of the model's (or judge's)
identity and the full request, so any run with the same model and request reuses them. Every
batch is committed as soon as it finishes; a killed run loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evalharness.errors import InputError
from evalharness.store.paths import default_store_path

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    judge TEXT,
    spec_json TEXT NOT NULL,
    provenance_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_tasks (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    n_samples INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    metrics_json TEXT,
    info_json TEXT NOT NULL,
    PRIMARY KEY (run_id, task)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    data_json TEXT NOT NULL,
    scores_json TEXT,
    PRIMARY KEY (run_id, task, sample_id)
);
CREATE TABLE IF NOT EXISTS responses (
    cache_key TEXT PRIMARY KEY,
    model_hash TEXT NOT NULL,
    request_json TEXT NOT NULL,
    result_json TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS verdicts (
    cache_key TEXT PRIMARY KEY,
    judge_hash TEXT NOT NULL,
    input_json TEXT NOT NULL,
    verdict_json TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('response', 'verdict')),
    slot TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    PRIMARY KEY (run_id, task, sample_id, kind, slot)
);
CREATE TABLE IF NOT EXISTS identities (
    identity_hash TEXT PRIMARY KEY,
    identity_json TEXT NOT NULL
);
"""


def check_store_file(path: Path, label: str | None = None) -> None:
    """An error unless `path` is absent, empty or an SQLite file; reads 16 bytes, writes none.

    `sqlite3.connect` accepts any file and fails only at the first statement, with a
    `DatabaseError` that does not say which file; this names it before anything is opened.
    """
    label = label or str(path)
    if path.is_dir():
        raise InputError(f"{label} is a directory, expected a run store file")
    if not path.exists():
        return
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if header and header != SQLITE_HEADER:
        raise InputError(f"{label} is not a run store (not an SQLite database)")


def _check_tables(conn: sqlite3.Connection, label: str) -> None:
    """Refuse another program's SQLite database: adding our tables would change its file."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "runs" not in tables:
        raise InputError(f"{label} is not a run store (an SQLite database without a 'runs' table)")


def store_location(path: str | Path | None) -> tuple[Path, str]:
    """The store a command names (`--store PATH`, else $EVALHARNESS_STORE, else the default)
    and how errors name it, so a stale environment variable is easy to spot."""
    if path:
        label = f"--store {path}"
    elif os.environ.get("EVALHARNESS_STORE"):
        label = f"EVALHARNESS_STORE={os.environ['EVALHARNESS_STORE']}"
    else:
        label = f"run store {default_store_path()}"
    return (Path(path) if path else default_store_path()), label


def open_store(
    path: str | Path | None, *, must_exist: bool = False, read_only: bool = False
) -> RunStore:
    """The store a command names (see `store_location`), opened; errors name where it came from.

    Commands that only read (`show`, `runs`, `report`, `compare`, `export`, ...) pass
    `read_only`: they then work on a store they may not write (a CI artifact, a shared
    folder, a read-only mount), and a store that does not exist is an error, not created.
    """
    store_path, label = store_location(path)
    if (must_exist or read_only) and not store_path.exists():
        raise InputError(f"no run store at {store_path}")
    return RunStore(store_path, label=label, read_only=read_only)


def read_only_reason(path: Path) -> str | None:
    """Why the store at `path` cannot be written (None when it can, as far as access() says).

    SQLite writes beside the file too (its -wal and -shm files), so the folder must be
    writable as well as the file.
    """
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is read-only"
    return None


def _read_only_error(label: str, reason: str) -> InputError:
    return InputError(
        f"{label} is read-only ({reason}): this command writes to the store; use a writable "
        "copy, or a read command (show, runs, report, compare, export)"
    )


def _is_read_only_error(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open database file" in text


def _connect_read_only(path: Path, label: str) -> sqlite3.Connection:
    """A connection for commands that only read (`PRAGMA query_only`), to any store.

    A store this process may write is opened as usual (so closing it tidies the -wal and -shm
    files as every connection does). One it may not write is opened through SQLite's URI
    options: `mode=ro` while a -wal file exists (a writer may be live, or left work in it
    that only a WAL reader sees), else `immutable=1`, which reads the file as it is and
    creates nothing beside it (`mode=ro` would need to create a -shm file there, which a
    read-only folder forbids and a writable one would keep as litter).
    """
    if read_only_reason(path) is None:
        targets = [(str(path), False)]
    else:
        uri = f"file:{quote(str(path.resolve()))}"
        wal = Path(f"{path}-wal").exists()
        targets = [(f"{uri}?mode=ro", True)] if wal else []
        targets.append((f"{uri}?mode=ro&immutable=1", True))
    error: sqlite3.Error | None = None
    for target, uri_form in targets:
        try:
            conn = sqlite3.connect(target, uri=uri_form, timeout=30.0)
        except sqlite3.Error as exc:
            error = exc
            continue
        try:
            conn.execute("PRAGMA query_only = ON")
            _check_tables(conn, label)
            return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            error = exc
        except InputError:
            conn.close()
            raise
    raise InputError(f"{label}: cannot read the run store ({error})") from None


@dataclass(frozen=True)
class Link:
    task: str
    sample_id: str
    kind: str
    slot: str
    cache_key: str


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class RunStore:
    """Thin, explicit SQL over one file; safe against kill -9 at any point.

    WAL journaling plus one transaction per finished batch: a killed process loses only the
    batch it was computing.
    """

    def __init__(
        self, path: str | Path, *, label: str | None = None, read_only: bool = False
    ) -> None:
        """Open (or create) the store; `label` names it in errors (e.g. `--store PATH`).

        Anything that is not a run store (a directory, a text file, another program's SQLite
        database) is refused before the first write, so a wrong `--store` never damages it.
        A store that cannot be written is refused with that reason, unless `read_only`: then
        it is opened without writing anything (`_connect_read_only`).
        """
        self.path = Path(path)
        label = label or str(self.path)
        check_store_file(self.path, label)
        if read_only:
            self.conn = _connect_read_only(self.path, label)
            return
        reason = read_only_reason(self.path)
        if reason:
            raise _read_only_error(label, reason)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30.0)
        except OSError as exc:
            reason = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
            raise InputError(f"{label}: cannot create it ({reason})") from None
        except sqlite3.Error as exc:
            raise InputError(f"{label}: cannot open the run store ({exc})") from None
        try:
            _check_tables(self.conn, label)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.OperationalError) and _is_read_only_error(exc):
                raise _read_only_error(label, str(exc)) from None
            raise InputError(f"{label} is not a run store ({exc})") from None
        except InputError:
            self.conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    # -- runs ----------------------------------------------------------------------------
    def begin_run(
        self, run_id: str, model: str, judge: str | None, spec: dict[str, Any], provenance: dict
    ) -> bool:
        """Create the run or reopen it; returns True when it already existed (a resume)."""
        now = time.time()
        with self.conn:
            existing = self.conn.execute(
                "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if existing:
                self.conn.execute(
                    "UPDATE runs SET status = 'running', updated_at = ?, provenance_json = ? "
                    "WHERE run_id = ?",
                    (now, _dumps(provenance), run_id),
                )
                return True
            self.conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (run_id, now, now, model, judge, _dumps(spec), _dumps(provenance)),
            )
        return False

    def finish_run(self, run_id: str, status: str = "complete") -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?",
                (status, time.time(), run_id),
            )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT run_id, created_at, updated_at, status, model, judge, spec_json, "
            "provenance_json FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        keys = ("run_id", "created_at", "updated_at", "status", "model", "judge")
        run = dict(zip(keys, row[:6], strict=True))
        run["spec"] = json.loads(row[6])
        run["provenance"] = json.loads(row[7])
        return run

    def find_runs(self, prefix: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY created_at", (prefix + "%",)
        ).fetchall()
        return [r[0] for r in rows]

    def resolve_run(self, reference: str) -> str:
        """A full run id from 'latest', a full id or an unambiguous prefix (else InputError)."""
        if reference == "latest":
            runs = self.list_runs()
            if not runs:
                raise InputError(f"{self.path}: no runs stored")
            return max(runs, key=lambda r: r["created_at"])["run_id"]
        matches = self.find_runs(reference)
        if not matches:
            raise InputError(f"no run {reference!r} in {self.path}")
        if len(matches) > 1:
            raise InputError(f"run id prefix {reference!r} is ambiguous ({len(matches)} runs)")
        return matches[0]

    def list_runs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT run_id, created_at, status, model, judge FROM runs ORDER BY created_at"
        ).fetchall()
        keys = ("run_id", "created_at", "status", "model", "judge")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- tasks and samples ---------------------------------------------------------------
    def put_task(self, run_id: str, task: str, n_samples: int, info: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO run_tasks (run_id, task, n_samples, info_json) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id, task) DO UPDATE SET n_samples = excluded.n_samples, "
                "info_json = excluded.info_json",
                (run_id, task, n_samples, _dumps(info)),
            )

    def put_task_metrics(
        self, run_id: str, task: str, metrics: dict[str, Any], failures: int
    ) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE run_tasks SET metrics_json = ?, failures = ? WHERE run_id = ? AND task = ?",
                (_dumps(metrics), failures, run_id, task),
            )

    def get_tasks(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT task, n_samples, failures, metrics_json, info_json FROM run_tasks "
            "WHERE run_id = ? ORDER BY task",
            (run_id,),
        ).fetchall()
        return [
            {
                "task": task,
                "n": n,
                "failures": failures,
                "metrics": json.loads(metrics) if metrics else None,
                "info": json.loads(info),
            }
            for task, n, failures, metrics, info in rows
        ]

    def put_samples(self, run_id: str, task: str, samples: Sequence[tuple[str, dict]]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO samples (run_id, task, sample_id, position, data_json) "
                "VALUES (?, ?, ?, ?, ?)",
                [(run_id, task, sid, pos, _dumps(data)) for pos, (sid, data) in enumerate(samples)],
            )

    def put_sample_scores(self, run_id: str, task: str, scores: dict[str, dict]) -> None:
        with self.conn:
            self.conn.executemany(
                "UPDATE samples SET scores_json = ? "
                "WHERE run_id = ? AND task = ? AND sample_id = ?",
                [(_dumps(s), run_id, task, sid) for sid, s in scores.items()],
            )

    def get_samples(self, run_id: str, task: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT sample_id, data_json, scores_json FROM samples WHERE run_id = ? AND task = ? "
            "ORDER BY position",
            (run_id, task),
        ).fetchall()
        return [
            {"sample_id": sid, "data": json.loads(d), "scores": json.loads(s) if s else None}
            for sid, d, s in rows
        ]

    def get_run_responses(self, run_id: str, task: str) -> dict[str, dict[str, Any]]:
        """sample id -> slot -> result, for the responses linked to a run's task."""
        rows = self.conn.execute(
            "SELECT l.sample_id, l.slot, r.result_json FROM links l "
            "JOIN responses r ON r.cache_key = l.cache_key "
            "WHERE l.run_id = ? AND l.task = ? AND l.kind = 'response'",
            (run_id, task),
        ).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for sample_id, slot, result in rows:
            found.setdefault(sample_id, {})[slot] = json.loads(result)
        return found

    def get_run_verdicts(self, run_id: str, task: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(sample id, slot) -> verdict, for the verdicts linked to a run's task."""
        rows = self.conn.execute(
            "SELECT l.sample_id, l.slot, v.verdict_json FROM links l "
            "JOIN verdicts v ON v.cache_key = l.cache_key "
            "WHERE l.run_id = ? AND l.task = ? AND l.kind = 'verdict'",
            (run_id, task),
        ).fetchall()
        return {(sample_id, slot): json.loads(verdict) for sample_id, slot, verdict in rows}

    # -- cache ---------------------------------------------------------------------------
    def put_identity(self, identity_hash: str, identity: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO identities VALUES (?, ?)", (identity_hash, _dumps(identity))
            )

    def get_responses(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self._get_many("responses", "result_json", keys)

    def get_verdicts(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self._get_many("verdicts", "verdict_json", keys)

    def _get_many(self, table: str, column: str, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT cache_key, {column} FROM {table} WHERE cache_key IN ({marks})", chunk
            ).fetchall()
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_responses(self, model_hash: str, items: Sequence[tuple[str, dict, dict]]) -> None:
        """Store (cache_key, request, result) triples in one transaction."""
        self._put_many("responses", model_hash, items)

    def put_verdicts(self, judge_hash: str, items: Sequence[tuple[str, dict, dict]]) -> None:
        """Store (cache_key, judged item, verdict) triples in one transaction."""
        self._put_many("verdicts", judge_hash, items)

    def _put_many(
        self, table: str, owner_hash: str, items: Sequence[tuple[str, dict, dict]]
    ) -> None:
        """The write side of `_get_many`: both caches are (key, owner, input, output, time)
        rows, and a key already stored keeps its first answer."""
        now = time.time()
        with self.conn:
            self.conn.executemany(
                f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?, ?, ?)",
                [(k, owner_hash, _dumps(given), _dumps(got), now) for k, given, got in items],
            )

    def put_links(self, run_id: str, links: Sequence[Link]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO links VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, x.task, x.sample_id, x.kind, x.slot, x.cache_key) for x in links],
            )

    def counts(self) -> dict[str, int]:
        """Row counts per table (used by tests and `show` to prove nothing was duplicated)."""
        tables = ("runs", "run_tasks", "samples", "responses", "verdicts", "links")
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
