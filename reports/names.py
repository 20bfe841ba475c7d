"""Where every page and data chunk of the report lives, relative to the site root.

One place names the files, so the pages that link to each other, the chunks a page loads and
the tests that open them can never disagree. Run ids and task names come from users and
stores, so they pass through `slug` before they become part of a path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of a run id or task name.

    Names that are already safe stay as they are (readable URLs); others get a hash suffix so
    two names that clean up to the same text never share a file.
    """
    clean = _UNSAFE_NAME.sub("_", name)[:60].strip("_")
    if clean == name and clean:
        return clean
    return f"{clean or 'x'}-{hashlib.sha1(name.encode('utf-8', 'replace')).hexdigest()[:8]}"


@dataclass
class Names:
    """Where every page and data chunk of the site lives (all relative to the site root)."""

    @staticmethod
    def run_page(run_id: str) -> str:
        return f"run-{slug(run_id)}.html"

    @staticmethod
    def task_page(task: str) -> str:
        return f"task-{slug(task)}.html"

    @staticmethod
    def samples_page(run_id: str, task: str) -> str:
        return f"samples-{slug(run_id)}-{slug(task)}.html"

    @staticmethod
    def sample_key(run_id: str, task: str) -> str:
        return f"{slug(run_id)}/{slug(task)}"

    @staticmethod
    def sample_dir(run_id: str, task: str) -> str:
        return f"data/samples/{slug(run_id)}/{slug(task)}/"

    @staticmethod
    def compare_file(run_a: str, run_b: str) -> str:
        return f"data/compare/{slug(run_a)}__{slug(run_b)}.js"
