"""`evalharness score`: log-likelihoods of continuations, as lm-evaluation-harness computes them.

Reads JSONL rows `{"context": str, "continuation": str, "id"?: any}` and prints one JSON line per
row, in input order: `{"id"?, "logprob", "n_tokens", "is_greedy"}`, the numbers lm-eval's
`loglikelihood` gives (summed log-probability of the continuation's tokens, and whether every one
of them is the model's argmax). The backend does the tokenisation split and the batching. A
row too long for the model's context is left-truncated as lm-eval does and says
`"truncated": true`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from evalharness.backends.base import all_results
from evalharness.engine.requests import ScoreRequest, ScoreResult
from evalharness.errors import InputError
from evalharness.formats.records import parse_jsonl, read_records, require

if TYPE_CHECKING:
    from evalharness.backends.base import Backend
    from evalharness.backends.spec import ModelSpec

#: Rows handed to the backend per call, in multiples of its batch size: enough for it to find
#: rows sharing a context and to batch rows of similar length, few enough to stream output.
BATCHES_PER_CALL = 32

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


def score_in_order(
    backend: Backend, requests: Sequence[ScoreRequest], rows_per_call: int
) -> Iterator[list[ScoreResult]]:
    """Results in input order, one list per backend call of `rows_per_call` requests.

    Within a call the requests go longest first (as lm-eval orders them), so each padded batch
    holds rows of similar length and memory problems show on the first batch.
    """
    for start in range(0, len(requests), rows_per_call):
        chunk = requests[start : start + rows_per_call]
        order = sorted(range(len(chunk)), key=lambda i: -_length(chunk[i]))
        results: list[ScoreResult | None] = [None] * len(chunk)
        for index, result in zip(order, backend.score([chunk[i] for i in order]), strict=True):
            results[index] = result
        yield all_results(results)


def _length(request: ScoreRequest) -> int:
    return len(request.context) + len(request.continuation)


def output_line(row: ScoreRow, result: ScoreResult) -> str:
    out: dict[str, Any] = {} if row.row_id is _NO_ID else {"id": row.row_id}
    out.update(logprob=result.logprob, n_tokens=result.n_tokens, is_greedy=result.is_greedy)
    if result.truncated:
        out["truncated"] = True
    return json.dumps(out)


def score_command(spec: ModelSpec, source: str, out: TextIO | None = None) -> int:
    """Score every row of `source` with the model `spec`, printing one JSON line per row."""
    from evalharness.backends import load_backend

    out = out or sys.stdout
    rows = read_score_rows(source)  # input errors before any model is loaded
    backend = load_backend(spec)
    rows_per_call = max(1, backend.batch_size) * BATCHES_PER_CALL
    done = 0
    try:
        for results in score_in_order(backend, [r.request for r in rows], rows_per_call):
            for row, result in zip(rows[done : done + len(results)], results, strict=True):
                out.write(output_line(row, result) + "\n")
            done += len(results)
            out.flush()
    finally:
        backend.close()
    return 0
