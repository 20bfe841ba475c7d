"""Reading data files of records (JSONL, a JSON list, CSV, YAML) with errors that name file and
line.

Every task and importer reads user files through here, so a malformed file always fails the
same way: one line naming the file, the line (or list element) and the field. Readers take an
optional `option` (`--input`, `mt_bench.data`, ...) so that a path that is missing or is a
directory is reported against the option the user typed it into.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from evalharness.errors import InputError


def input_file(path: Path, option: str | None = None) -> Path:
    """`path` (with `~` expanded) when it is an existing file; else an error naming `option`.

    Checked before opening so that a directory is reported as such rather than as an `OSError`
    whose wording differs between platforms.
    """
    path = path.expanduser()
    label = f"{option}: {path}" if option else str(path)
    if path.is_dir():
        raise InputError(f"{label} is a directory, expected a file")
    if not path.exists():
        raise InputError(f"{label}: no such file")
    return path


def read_text(path: Path, option: str | None = None) -> str:
    """A user file's UTF-8 text with universal newlines; an encoding error names the line."""
    text = _decode(input_file(path, option))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_jsonl(path: Path, option: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) pairs; a malformed line is an error naming the file and line."""
    return parse_jsonl(read_text(path, option), str(path))


def parse_jsonl(text: str, source: str) -> list[tuple[int, dict[str, Any]]]:
    """`read_jsonl` for text already in hand (e.g. stdin); errors name `source` and the line."""
    rows = []
    # Only "\n" ends a JSONL line: `str.splitlines` would also split inside strings holding a raw
    # U+2028 or form feed (valid JSON), and count lines differently from editors.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise InputError(f"{source}:{number}: expected a JSON object")
        rows.append((number, value))
    return rows


def read_records(path: Path, option: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(location, object) pairs from a JSON list, JSONL or CSV file, chosen by content/suffix.

    The location is `file:line` for JSONL and CSV, `file[index]` for a JSON list, ready to
    prefix an error message.
    """
    path = input_file(path, option)
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        rows = []
        for index, value in enumerate(values):
            if not isinstance(value, dict):
                raise InputError(f"{path}[{index}]: expected a JSON object")
            rows.append((f"{path}[{index}]", value))
        return rows
    return [(f"{path}:{number}", row) for number, row in read_jsonl(path)]


class YamlLines(dict[tuple[str | int, ...], int]):
    """Line numbers of a YAML document's keys and list items, by their path from the root.

    `yaml.safe_load` forgets where a value was written; settings checked after loading use this
    to name the line a user has to fix (`("train", "learning_rate")`, `("rules", 0)`).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def where(self, *keys: str | int) -> str:
        """`file:line` of the deepest of `keys` that has a line, else just the file."""
        for end in range(len(keys), 0, -1):
            line = self.get(tuple(keys[:end]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)


def read_yaml_lines(
    path: Path, option: str | None = None, loader_class: Any = None
) -> tuple[Any, YamlLines]:
    """`yaml.safe_load` of a file, plus the line of every key and list item (`YamlLines`); a
    syntax error names the file and line.

    The text is parsed once: the composed node tree (which keeps source marks) gives the lines
    and is then constructed into values, as `safe_load` itself does. `loader_class` replaces
    `yaml.SafeLoader` with a subclass of it (lm-eval's `!function` tag, `tasks/declarative`).
    """
    import yaml

    loader = (loader_class or yaml.SafeLoader)(read_text(path, option))
    try:
        node = loader.get_single_node()
        value = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    finally:
        loader.dispose()
    lines = YamlLines(path)
    if node is not None:
        _collect_lines(node, (), lines, set())
    return value, lines


def _collect_lines(node: Any, prefix: tuple[str | int, ...], lines: YamlLines, seen: set) -> None:
    """Walk the composed node tree (it keeps source marks; loaded values do not)."""
    import yaml

    if id(node) in seen:  # an alias of a node already walked (anchors can be recursive)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, child in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[(*prefix, str(key.value))] = key.start_mark.line + 1
                _collect_lines(child, (*prefix, str(key.value)), lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            lines[(*prefix, index)] = child.start_mark.line + 1
            _collect_lines(child, (*prefix, index), lines, seen)


def require(where: str, row: dict[str, Any], field: str, kind: type | None = None) -> Any:
    """`row[field]`, or a one-line error naming where the row came from and the field."""
    if field not in row or row[field] is None:
        raise InputError(f"{where}: missing field {field!r}")
    value = row[field]
    if kind is not None and not isinstance(value, kind):
        raise InputError(f"{where}: field {field!r} must be a {kind.__name__}")
    return value


class UniqueIds:
    """The ids of one data file's rows, each allowed once: the one check every reader uses.

    A repeated id used to be renamed (`id-2`) or to replace the first row, so one item was
    counted twice, or silently lost, in every metric. It is an error instead, naming the file
    and line of the repeat, the id, and the line where it first appeared.
    """

    def __init__(self, field: str = "id") -> None:
        self.field = field
        self._first: dict[Hashable, str] = {}

    def add(self, where: str, value: Hashable, *, described: str | None = None) -> None:
        """Record `value` (the row at `where`, as `read_records` names it), or fail on a repeat.

        `described` names the key in the error where the field alone would not (an id derived
        from the row's content, say).
        """
        first = self._first.get(value)
        if first is None:
            self._first[value] = where
            return
        shown = described or f"{self.field} {value!r}"
        raise InputError(f"{where}: {shown} appears twice (first at {_position(first, where)})")


def _position(first: str, where: str) -> str:
    """`first` as short as it can be beside `where`: "line 3" or "[2]" in the same file."""
    for mark in (":", "["):
        file, sep, rest = first.rpartition(mark)
        if sep and where.startswith(file + mark):
            return f"line {rest}" if mark == ":" else f"[{rest}"
    return first


def _decode(path: Path) -> str:
    """The file as UTF-8, newlines untouched; bytes that are not UTF-8 name their line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None


def _read_csv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    # Decoded up front (not streamed) so an encoding error is an InputError naming its line;
    # newline="" keeps line breaks inside quoted fields as the csv module expects.
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    try:
        for row in reader:
            rows.append((f"{path}:{reader.line_num}", dict(row)))
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    return rows
