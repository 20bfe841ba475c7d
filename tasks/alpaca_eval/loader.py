"""Where AlpacaEval instructions and reference outputs come from.

- `builtin`: a small authored set (instructions and reference answers written for this
  project), for the offline default and tests;
- a path: AlpacaEval's `model_outputs.json` format (a JSON list or JSONL of `instruction`,
  `output`, `generator`, `dataset`), or an annotations file (`output_1` is the reference);
- `hub`: the 805-instruction AlpacaEval 2.0 set with GPT-4-Turbo references
  (`tatsu-lab/alpaca_eval`, file `alpaca_eval_gpt4_baseline.json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, read_records, require

BUILTIN = Path(__file__).resolve().parent / "data" / "alpaca_mini.jsonl"
HUB_REPO = "tatsu-lab/alpaca_eval"
HUB_FILE = "alpaca_eval_gpt4_baseline.json"


def items_from_file(path: Path, option: str | None = None) -> list[dict[str, Any]]:
    """Normalised items: instruction, dataset, reference (output), reference_generator."""
    items: list[dict[str, Any]] = []
    seen = UniqueIds("instruction")
    for where, row in read_records(path, option):
        instruction = require(where, row, "instruction", str)
        output_field = "output_1" if "output_1" in row else "output"
        reference = require(where, row, output_field, str)
        generator_field = "generator_1" if output_field == "output_1" else "generator"
        seen.add(where, instruction, described=f"instruction {instruction[:50]!r}")
        items.append(
            {
                "instruction": instruction,
                "dataset": str(row.get("dataset") or "unknown"),
                "reference": reference,
                "reference_generator": str(row.get(generator_field) or "reference"),
            }
        )
    if not items:
        raise InputError(f"{path}: no instructions")
    return items


def load_from_hub(revision: str | None = None) -> tuple[Path, str]:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(HUB_REPO, HUB_FILE, repo_type="dataset", revision=revision)
    except Exception as exc:  # offline, missing, auth: all one actionable message
        raise InputError(
            f"AlpacaEval from the hub ({HUB_REPO}/{HUB_FILE}) failed: {type(exc).__name__}; "
            "pass alpaca_eval.data=PATH (model_outputs.json format) or alpaca_eval.data=builtin"
        ) from None
    return Path(path), f"hub:{HUB_REPO}/{HUB_FILE}"


def load_items(source: str) -> tuple[list[dict[str, Any]], str]:
    if source == "builtin":
        return items_from_file(BUILTIN), f"builtin:{BUILTIN.name}"
    if source in ("hub", "auto"):
        path, description = load_from_hub()
        return items_from_file(path), description
    path = Path(source).expanduser()
    return items_from_file(path, "alpaca_eval.data"), str(path.resolve())
