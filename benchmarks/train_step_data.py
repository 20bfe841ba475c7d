"""The data and model benchmarks/train_step.py gives both trainers: the checkpoint (tiny,
SmolLM2 or a directory), HH-RLHF or synthetic preference pairs, cut with the model's tokenizer
so that neither trainer truncates anything and both train on the same tokens.

Apart from the timing so that the "same inputs on both sides" rule can be read in one place.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

HH_RLHF = Path("/work/shared/data/hh_rlhf/harmless_base_test_first2000.jsonl")
ASSISTANT = "\n\nAssistant:"
REPO = Path(__file__).resolve().parent.parent
_WORD_TEXT = (
    "the a of and to in is it that was for on are with as they be at one have this from "
    "water river city capital question answer explain why because better worse good bad "
    "people time day number sound long make thing see look more could come first find"
)
WORDS = tuple(_WORD_TEXT.split())  # synthetic dialogues when no data file is present


def resolve_model(name: str, workdir: Path) -> tuple[str, Path]:
    """(label, checkpoint directory) for `tiny`, `smollm2` or a local directory."""
    if name == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_models import build_tiny_chat_model

        return "tiny", build_tiny_chat_model(workdir / "tiny-model")
    if name == "smollm2":
        from evalharness.backends import default_model

        return "smollm2", default_model.converted_dir()
    path = Path(name.removeprefix("hf:")).expanduser()
    if not path.is_dir():
        raise SystemExit(f"--model {name}: not tiny, smollm2 or a checkpoint directory")
    return path.name, path.resolve()


def split_dialogue(text: str) -> tuple[str, str] | None:
    """HH-RLHF dialogue -> (prompt up to and including the last "Assistant:", completion)."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        return None
    return text[: cut + len(ASSISTANT)], text[cut + len(ASSISTANT) :]


def hh_rows(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "prompt" in record:  # explicit prompt/chosen/rejected rows
            rows.append({key: record[key] for key in ("prompt", "chosen", "rejected")})
            continue
        chosen, rejected = split_dialogue(record["chosen"]), split_dialogue(record["rejected"])
        if chosen is None or rejected is None or chosen[0] != rejected[0]:
            continue
        if not chosen[1].strip() or not rejected[1].strip() or chosen[1] == rejected[1]:
            continue
        rows.append({"prompt": chosen[0], "chosen": chosen[1], "rejected": rejected[1]})
    return rows


def synthetic_rows(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    rows = []
    for _ in range(count):
        prompt = f"\n\nHuman: {sentence(30, 60)}?{ASSISTANT} {sentence(10, 30)}."
        prompt += f"\n\nHuman: {sentence(20, 40)}?{ASSISTANT}"
        rows.append(
            {
                "prompt": prompt,
                "chosen": f" {sentence(20, 60)}.",
                "rejected": f" {sentence(20, 60)}.",
            }
        )
    return rows


def cut_text(tokenizer: Any, text: str, budget: int, keep_end: bool) -> str:
    """`text` cut to at most `budget` tokens (its end or its start), re-checked after decoding."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = budget
    while len(ids) > budget and keep > 0:
        ids = ids[len(ids) - keep :] if keep_end else ids[:keep]
        text = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        keep -= 1  # a cut inside a character can re-encode longer: cut one more
    return text if len(ids) <= budget else ""  # "" drops the row


def prepare_rows(
    rows: list[dict[str, str]], tokenizer: Any, count: int, max_length: int, max_prompt: int
) -> list[dict[str, str]]:
    """The first `count` rows, cut so that no trainer has to truncate (see the docstring)."""
    prompt_budget = max_prompt - 1
    completion_budget = max_length - max_prompt - 1
    prepared = []
    for row in rows:
        cut = {
            "prompt": cut_text(tokenizer, row["prompt"], prompt_budget, keep_end=True),
            "chosen": cut_text(tokenizer, row["chosen"], completion_budget, keep_end=False),
            "rejected": cut_text(tokenizer, row["rejected"], completion_budget, keep_end=False),
        }
        usable = cut["prompt"].strip() and cut["chosen"].strip() and cut["rejected"].strip()
        if usable and cut["chosen"] != cut["rejected"]:
            prepared.append(cut)
        if len(prepared) == count:
            break
    if len(prepared) < count:
        raise SystemExit(f"only {len(prepared)} usable rows, {count} needed")
    return prepared


def load_rows(args: argparse.Namespace, count: int) -> tuple[list[dict[str, str]], str]:
    """`--data`'s rows (HH-RLHF by default when present), else `count` * 4 synthetic ones;
    and where they came from."""
    data = args.data or (HH_RLHF if HH_RLHF.exists() and not args.synthetic else None)
    if data is None:
        return synthetic_rows(count * 4, args.seed), "synthetic"
    return hh_rows(data), str(data)
