"""README's method table names every method `evalharness methods` lists, in the right family:
offline or online for trained methods, tuning-free for model-spec wrappers. A method added to
the registry without a row here (or one listed in the wrong family) fails this test."""

from __future__ import annotations

from pathlib import Path

from evalharness.engine.training import method_rows

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| family | methods | how |"


def readme_families() -> dict[str, set[str]]:
    """Method names per family (`offline`, `online`, `tuning-free`) from README's table."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER) + 2  # past the header and its |---| line
    families: dict[str, set[str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        family, methods = (cell.strip() for cell in line.strip("|").split("|")[:2])
        family = family.split(" (")[0].split(",")[0]
        families.setdefault(family, set()).update(m.strip() for m in methods.split(","))
    return families


def test_readme_method_table_lists_every_method_in_its_family() -> None:
    expected: dict[str, set[str]] = {}
    for row in method_rows():
        family = "tuning-free" if row["tuning_free"] else row["kind"]
        expected.setdefault(family, set()).add(row["name"])
    assert readme_families() == expected
