"""Data chunks the report pages load lazily, as `<script>` files that call `EH.receive`.

Why script files and not JSON: Chromium refuses `fetch()` of local files, so a report opened
from file:// can only pull data in with `<script src>`. Each chunk calls
`window.EH.receive(key, payload)`; the JSON is escaped so that no text from a model or a judge
can close the script, start markup, or break the JavaScript parser (U+2028/U+2029).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalharness.reports.collect import SampleRecord, as_number

#: Samples per detail chunk: a page of the sample list opens with at most one chunk load.
PAGE_SIZE = 100
#: Characters per text kept in the list (the details hold the full text).
SNIPPET_CHARS = 160
#: Characters per sample searched (prompt + responses); beyond this search is not exhaustive.
SEARCH_CHARS = 20_000
#: Distinct verdict labels above which the verdict filter is left out (e.g. numeric ratings).
MAX_VERDICT_LABELS = 40

_JS_UNSAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JS_UNSAFE_RE = re.compile("[<>&\u2028\u2029]")
_SPACE_RE = re.compile(r"\s+")


def finite(value: Any) -> Any:
    """The value with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def js_json(value: Any) -> str:
    """JSON that is safe inside a `<script>` element and a JavaScript source file."""
    text = json.dumps(finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _JS_UNSAFE_RE.sub(lambda m: _JS_UNSAFE[m.group()], text)


def write_text(path: Path, text: str) -> int:
    """Write UTF-8 (a lone surrogate from a broken decode becomes '?'); returns the bytes."""
    data = text.encode("utf-8", errors="replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def write_chunk(path: Path, key: str, payload: Any) -> int:
    """A script file handing `payload` to the page under `key`; returns the bytes written."""
    return write_text(path, f"window.EH.receive({js_json(key)},{js_json(payload)});\n")


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = _SPACE_RE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def verdict_label(verdict: str) -> str:
    """A filterable verdict: failures collapse into one label whatever their error text."""
    return "failed" if verdict.startswith("failed") else verdict


def detail(record: SampleRecord) -> dict[str, Any]:
    """Everything the sample page shows for one sample (responses as pairs: slot order kept)."""
    view = record.view
    return {
        "id": record.sample_id,
        "prompt": [str(p) for p in view.prompt],
        "responses": [[str(slot), str(text)] for slot, text in view.responses.items()],
        "reference": None if view.reference is None else str(view.reference),
        "verdicts": [
            {
                "slot": str(v.get("slot", "")),
                "verdict": str(v.get("verdict", "")),
                "score": as_number(v.get("score")),
                "rationale": None if v.get("rationale") is None else str(v["rationale"]),
            }
            for v in view.verdicts
        ],
        "score": as_number(view.score),
        "tags": {str(k): str(v) for k, v in view.tags.items()},
    }


def search_text(record: SampleRecord) -> str:
    view = record.view
    parts = [record.sample_id, *map(str, view.prompt), *map(str, view.responses.values())]
    return _SPACE_RE.sub(" ", "\n".join(parts)).lower()[:SEARCH_CHARS]


def sample_index(records: Sequence[SampleRecord]) -> tuple[dict[str, Any], list[str]]:
    """The light per-run-and-task index (ids, tags, scores, verdicts, snippets) and search texts.

    Tags and verdicts are stored as indexes into per-chunk value lists, which keeps the index of
    a 10k-sample task small enough to load at once.
    """
    tag_keys: list[str] = []
    for record in records:
        tag_keys += [str(k) for k in record.view.tags if str(k) not in tag_keys]
    tag_values: dict[str, dict[str, int]] = {k: {} for k in tag_keys}
    verdicts: dict[str, int] = {}
    rows = []
    for record in records:
        view = record.view
        tags = []
        for key in tag_keys:
            value = view.tags.get(key)
            tags.append(
                -1
                if value is None
                else tag_values[key].setdefault(str(value), len(tag_values[key]))
            )
        # Sorted, not set order: a sample's new labels then number alike in every process
        # (a set of strings iterates in string-hash order, which changes per interpreter).
        labels = sorted({verdict_label(str(v.get("verdict", ""))) for v in view.verdicts})
        marks = sorted(verdicts.setdefault(label, len(verdicts)) for label in labels)
        first_response = next(iter(view.responses.values()), "")
        rows.append(
            [
                record.sample_id,
                as_number(view.score),
                tags,
                marks,
                snippet(str(view.prompt[0]) if view.prompt else ""),
                snippet(str(first_response)),
            ]
        )
    keep_verdicts = len(verdicts) <= MAX_VERDICT_LABELS
    if not keep_verdicts:
        for row in rows:
            row[3] = []
    index = {
        "n": len(records),
        "page_size": PAGE_SIZE,
        "tag_keys": tag_keys,
        "tag_values": [list(tag_values[k]) for k in tag_keys],
        "verdicts": list(verdicts) if keep_verdicts else [],
        "fallbacks": sum(r.fallback for r in records),
        "rows": rows,
    }
    return index, [search_text(r) for r in records]
