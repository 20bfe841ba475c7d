"""Build the site beside `--out` and swap it into place only when it is complete.

A reader never sees half a report, and a failed build leaves the previous one intact. A
directory is only ever replaced if it holds a report (the `MARKER` file says so), so a
mistyped `--out` cannot wipe someone's unrelated files.
"""

from __future__ import annotations

import os
import shutil
from importlib.resources import files
from pathlib import Path

from evalharness.errors import InputError

#: A file in every report directory; only a directory holding it is ever replaced.
MARKER = ".evalharness-report"


def prepare(out: Path) -> Path:
    """A fresh staging directory beside `out`, after checking `out` may be (re)written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise InputError(
            f"--out {out} is a non-empty directory without a report in it; "
            "give a new or empty directory (or an earlier report's)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path) -> None:
    """Swap the finished site into place; the old one is removed only after the swap."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def copy_static(root: Path) -> list[int]:
    """Copy the package's static files (CSS, JavaScript) under `root/static`; their sizes."""
    static = files("evalharness.reports").joinpath("static")
    (root / "static").mkdir()
    sizes = []
    for entry in static.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            data = entry.read_bytes()
            (root / "static" / entry.name).write_bytes(data)
            sizes.append(len(data))
    return sizes
