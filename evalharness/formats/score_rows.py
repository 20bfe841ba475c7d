"""The JSONL rows `evalharness score` reads and the JSON lines it writes.

A row is `{"context": str, "continuation": str, "id"?: any}`; an output line is
`{"id"?, "logprob", "n_tokens", "is_greedy", "truncated"?}`, lm-evaluation-harness's
`loglikelihood` numbers. `merge --heldout` reads the same rows.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.engine.requests import ScoreRequest, ScoreResult
from evalharness.errors import InputError
from evalharness.formats.records import parse_jsonl, read_records, require

#: A row without an `id` gets none in its output line (`None` is an id like any other).
_NO_ID = object()


@dataclass(frozen=True)
class ScoreRow:
    where: str
    request: ScoreRequest
    row_id: Any = _NO_ID


def read_score_rows(source: str, option: str = "--input") -> list[ScoreRow]:
    """Rows from a JSONL file (or `-` for stdin); a bad row is an error naming file and line."""
    if source == "-":
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("<stdin>: not UTF-8 text") from None
        records = [(f"<stdin>:{n}", row) for n, row in parse_jsonl(text, "<stdin>")]
    else:
        records = read_records(Path(source), option)
    rows = []
    for where, record in records:
        context = require(where, record, "context", str)
        continuation = require(where, record, "continuation", str)
        if not continuation:
            raise InputError(f"{where}: field 'continuation' is empty")
        request = ScoreRequest(context=context, continuation=continuation)
        rows.append(ScoreRow(where, request, record.get("id", _NO_ID)))
    return rows


def output_line(row: ScoreRow, result: ScoreResult) -> str:
    """The JSON line for one scored row (its id first, when it has one)."""
    out: dict[str, Any] = {} if row.row_id is _NO_ID else {"id": row.row_id}
    out.update(logprob=result.logprob, n_tokens=result.n_tokens, is_greedy=result.is_greedy)
    if result.truncated:
        out["truncated"] = True
    return json.dumps(out)
