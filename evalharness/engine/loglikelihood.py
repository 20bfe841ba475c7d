"""Log-likelihoods of continuations, as lm-evaluation-harness computes them (`evalharness score`).

The numbers are lm-eval's `loglikelihood` ones (summed log-probability of the continuation's
tokens, and whether every one of them is the model's argmax). The backend does the tokenisation
split and the batching; this module feeds it rows in calls big enough to batch well and writes
the results back in input order as they come. A row too long for the model's context is
left-truncated as lm-eval does and says `"truncated": true`. The rows read and the lines written
are `formats.score_rows`'. (A run's task scores are another thing: `scoring`.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

from evalharness.backends.base import all_results
from evalharness.engine.requests import ScoreRequest, ScoreResult
from evalharness.formats.score_rows import output_line, read_score_rows

if TYPE_CHECKING:
    from evalharness.backends.base import Backend
    from evalharness.backends.spec import ModelSpec

#: Rows handed to the backend per call, in multiples of its batch size: enough for it to find
#: rows sharing a context and to batch rows of similar length, few enough to stream output.
BATCHES_PER_CALL = 32


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


def score_file(spec: ModelSpec, source: str, out: TextIO | None = None) -> int:
    """Score every row of `source` with the model `spec`, writing one JSON line per row."""
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
