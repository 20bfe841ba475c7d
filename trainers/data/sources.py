"""Loading training rows from a JSONL/JSON file, a Parquet file, a saved dataset or the hub.

Every row keeps where it came from (`file:line`, `file[index]`, `name:split[index]`) so that a
problem found while validating or tokenising names the row a user has to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import read_records

from .formats import Row, check_format, normalize_row

#: Suffixes that mark `source` as a local file, so a typo in a path is "no such file" rather
#: than a failed hub look-up.
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

Located = list[tuple[str, Row]]


class LoadedRows(list[Row]):
    """The validated rows (a plain list of dicts) plus `locations[i]`, where row i came from.

    A list subclass so callers that only want rows use it as one, while `tokenize_rows` still
    finds the locations for its error messages.
    """

    def __init__(self, rows: Iterable[Row], locations: list[str], source: str) -> None:
        super().__init__(rows)
        self.locations = locations
        self.source = source

    def __getitem__(self, index: Any) -> Any:
        """A slice stays `LoadedRows` (`rows[:limit]` keeps its locations); an int is a row."""
        if isinstance(index, slice):
            return LoadedRows(super().__getitem__(index), self.locations[index], self.source)
        return super().__getitem__(index)


def load_rows(
    source: str | Path, data_format: str, split: str = "train", *, limit: int | None = None
) -> LoadedRows:
    """Read, validate and normalise the rows of `source` for `data_format`.

    `source` is a JSONL (or JSON list / CSV) file, a `.parquet` file, a directory written by
    `datasets.save_to_disk`, or a hub dataset id `name[:split]` (the suffix overrides `split`).
    `limit` keeps the first rows only (quick runs). Errors are one-line `InputError`s naming the
    file and line (or dataset and index) and the field.
    """
    check_format(data_format)
    located = _read_source(source, split)
    if limit is not None:
        located = located[:limit]
    if not located:
        raise InputError(f"{source}: no rows")
    rows = [normalize_row(row, data_format, where) for where, row in located]
    return LoadedRows(rows, [where for where, _ in located], str(source))


def _read_source(source: str | Path, split: str) -> Located:
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_saved(path, split)
    if path.is_file():
        if path.suffix.lower() == ".parquet":
            return _read_parquet(path)
        return read_records(path)
    text = str(source)
    if path.suffix.lower() in FILE_SUFFIXES or text.startswith((".", "/", "~")):
        raise InputError(f"{path}: no such file")
    name, _, named_split = text.partition(":")
    return _read_hub(name, named_split or split)


def _read_parquet(path: Path) -> Located:
    """Rows as plain Python values (pyarrow keeps lists of messages as lists of dicts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read Parquet ({_first_line(exc)})") from None
    return [(f"{path}[{index}]", row) for index, row in enumerate(rows)]


def _read_saved(path: Path, split: str) -> Located:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(
            f"{path}: not a dataset saved by datasets.save_to_disk ({_first_line(exc)})"
        ) from None
    prefix = str(path)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"{path}: no split {split!r} (splits: {', '.join(loaded)})")
        loaded, prefix = loaded[split], f"{path}/{split}"
    return _located(prefix, loaded.to_list())


def _read_hub(name: str, split: str) -> Located:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many types (not found, offline, bad split)
        raise InputError(
            f"{name}: cannot load hub dataset split {split!r} "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    return _located(f"{name}:{split}", dataset.to_list())


def _located(prefix: str, rows: list[Any]) -> Located:
    return [(f"{prefix}[{index}]", row) for index, row in enumerate(rows)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
