"""AlpacaEval 2's calibration file for the length-controlled win rate, and AlpacaEval's item index.

`length_controlled_v1` (`length_control.py`) fits each model together with rows that AlpacaEval
fitted once for everyone: the annotations of two "gamed" versions of its baseline (GPT-4 Turbo
told to be verbose, and to be concise) with their precomputed `std_delta_len`, and one
`instruction_difficulty` per instruction. They live in `df_gamed.csv` in the hub dataset
`tatsu-lab/alpaca_eval`, one row per (gamed model, instruction) with the columns `index` (the
instruction's position in AlpacaEval's 805-item set), `instruction_difficulty`,
`not_gamed_baseline` (False), `preference` (in [0, 1]), `std_delta_len` and `model`.

The file comes from `huggingface_hub.hf_hub_download` (so a warm Hugging Face cache works offline;
`hf download tatsu-lab/alpaca_eval df_gamed.csv --repo-type dataset` fills it) or
from a path (`alpaca_eval.calibration=PATH`). Without it there is no `length_controlled_winrate`
(see `task.py` for the fallback); a path that cannot be read is an error, a hub miss is not.

The calibration only means something on AlpacaEval's own instructions. An instruction's
AlpacaEval index is its position in `data/eval_set_ids.txt`: the sample ids
(`sha256(instruction)[:16]`, `task.sample_id`) of AlpacaEval 2.0's evaluation set in its order
(the instructions of `alpaca_eval_gpt4_baseline.json`, the same in every published
`model_outputs.json`). The data counts as AlpacaEval's when every instruction it holds is one of
those 805 (`alpaca_eval_indexes`): any subset, in any order (`--limit N` keeps the first N), read
from the hub, a `model_outputs.json` or an annotations file. One instruction that is not, and the
whole run goes without calibration: AlpacaEval's difficulties say nothing about other prompts.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalharness.errors import InputError
from evalharness.formats.records import read_text
from evalharness.store.hashing import sha256_file

from .loader import HUB_REPO  # the calibration file sits beside the evaluation set

HUB_FILE = "df_gamed.csv"
EVAL_SET_IDS = Path(__file__).resolve().parent / "data" / "eval_set_ids.txt"
COLUMNS = ("index", "instruction_difficulty", "not_gamed_baseline", "preference", "std_delta_len")
#: `alpaca_eval.calibration` values that mean "look in the Hugging Face cache / hub" and "don't".
FROM_HUB = "hub"
NONE = "none"


@cache
def eval_set_ids() -> dict[str, int]:
    """Sample id -> AlpacaEval index, for the 805 instructions of AlpacaEval 2.0."""
    ids = EVAL_SET_IDS.read_text().split()
    return {sample_id: index for index, sample_id in enumerate(ids)}


def alpaca_eval_indexes(sample_ids: list[str]) -> list[int] | None:
    """Each sample's AlpacaEval index, or None unless every sample is an AlpacaEval instruction."""
    known = eval_set_ids()
    if not sample_ids or any(i not in known for i in sample_ids):
        return None
    return [known[i] for i in sample_ids]


@dataclass(frozen=True)
class Calibration:
    """The gamed-baseline rows of `df_gamed.csv`, in file order, and the difficulty lookup.

    `difficulty_by_row` reproduces AlpacaEval's lookup exactly: it reads the difficulty of item g
    as `df_gamed.drop_duplicates("index")["instruction_difficulty"][g]`, a lookup by *row label*
    (the row's position in the file), not by the `index` column. The two agree when the file's
    first rows list the items in order, as AlpacaEval's file does; `rows_in_index_order` records
    whether they do, and either way the numbers are AlpacaEval's.
    """

    source: str
    sha256: str
    std_delta_len: np.ndarray
    instruction_difficulty: np.ndarray
    not_gamed_baseline: np.ndarray
    preference: np.ndarray
    difficulty_by_row: dict[int, float]
    rows_in_index_order: bool

    def difficulty(self, indexes: list[int]) -> np.ndarray:
        """Instruction difficulty of these AlpacaEval items; an item the file lacks is an error."""
        missing = [g for g in indexes if g not in self.difficulty_by_row]
        if missing:
            raise InputError(
                f"{self.source}: no instruction difficulty for AlpacaEval item {missing[0]} "
                f"({len(missing)} item(s) missing); is it AlpacaEval's df_gamed.csv?"
            )
        return np.asarray([self.difficulty_by_row[g] for g in indexes], dtype=float)

    def describe(self) -> dict[str, Any]:
        """What the run's settings (and so its provenance) record about the file."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "rows": int(self.preference.size),
            "rows_in_index_order": self.rows_in_index_order,
        }


def read_calibration(path: Path, source: str | None = None) -> Calibration:
    """Read and check `df_gamed.csv` (see the module docstring for its columns)."""
    where = source or str(path)
    # Decoded by the project's reader, so a missing file or a byte that is not UTF-8 is the
    # same one-line error as for every other input file.
    text = read_text(path, "alpaca_eval.calibration")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{where}: not a readable CSV ({reason})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{where}: missing column {missing[0]!r} (df_gamed.csv has {COLUMNS})")
    if frame.empty:
        raise InputError(f"{where}: no rows")
    if frame["not_gamed_baseline"].dtype != bool:
        raise InputError(f"{where}: column 'not_gamed_baseline' must be True/False")
    numbers = {}
    for column in ("index", "instruction_difficulty", "std_delta_len", "preference"):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if column == "preference":  # AlpacaEval drops rows without a preference
            bad &= frame[column].notna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(
                f"{where}: line {row + 2}: {column} {frame[column].iloc[row]!r} is not a number"
            )
        numbers[column] = values
    if np.any(numbers["index"] != np.round(numbers["index"])):
        raise InputError(f"{where}: column 'index' must hold whole numbers")
    firsts = frame.drop_duplicates("index")
    by_row = dict(
        zip(
            firsts.index.astype(int).tolist(),
            firsts["instruction_difficulty"].astype(float).tolist(),
            strict=True,
        )
    )
    in_order = bool(np.array_equal(firsts.index.to_numpy(), firsts["index"].to_numpy()))
    return Calibration(
        source=where,
        sha256=sha256_file(path),
        std_delta_len=numbers["std_delta_len"],
        instruction_difficulty=numbers["instruction_difficulty"],
        not_gamed_baseline=frame["not_gamed_baseline"].to_numpy(dtype=bool),
        preference=numbers["preference"],
        difficulty_by_row=by_row,
        rows_in_index_order=in_order,
    )


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """Offline, huggingface_hub logs each failed request; the run's one warning line says it."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def is_path(option: str | None) -> bool:
    """Whether `alpaca_eval.calibration` names a file (rather than `hub` or `none`)."""
    return option not in (None, "", FROM_HUB, NONE)


def load_calibration(option: str | None) -> tuple[Calibration | None, str]:
    """The calibration named by `alpaca_eval.calibration`, or None and why there is none.

    No option (or `hub`) takes the copy in the Hugging Face cache, or downloads it there when
    there is none; a miss is not an error (the run reports the fallback instead). Offline, set
    HF_HUB_OFFLINE=1 so that a miss fails at once rather than after the hub's retries. `none`
    skips it. Anything else is a path, and a path that cannot be read is an error, since it was
    asked for.
    """
    if option == NONE:
        return None, "alpaca_eval.calibration=none"
    if not is_path(option):
        from huggingface_hub import hf_hub_download

        def download(local_only: bool) -> str:
            with _quiet_hub():
                return hf_hub_download(
                    repo_id=HUB_REPO,
                    filename=HUB_FILE,
                    repo_type="dataset",
                    local_files_only=local_only,
                )

        try:  # the cached copy first: no network at all when the cache is warm
            path = download(local_only=True)
        except Exception:
            try:
                path = download(local_only=False)
            except Exception as exc:  # offline, cache miss, auth: all mean "not available"
                return None, (
                    f"{HUB_FILE} is not in the Hugging Face cache and could not be downloaded "
                    f"({type(exc).__name__})"
                )
        return read_calibration(Path(path), f"hub:{HUB_REPO}/{HUB_FILE}"), ""
    path = Path(str(option)).expanduser()
    return read_calibration(path, str(path.resolve())), ""
