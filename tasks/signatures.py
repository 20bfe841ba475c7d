"""The argument types of a task's methods (`base.Task`), named once.

Every task overrides the same methods with the same arguments: responses and verdicts by slot
while it runs, the stored JSON of a sample when a report reads it back. Named here, a task's
signatures say what each argument is and stay on one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalharness.engine.requests import Result

#: A sample's responses so far, by slot: what `requests`, `judge_items` and `score` read.
Responses = Mapping[str, Result]
#: The judge's verdicts of a sample, by slot: what `score` reads.
Verdicts = Mapping[str, dict[str, Any]]
#: A stored sample's data or scores, as JSON: what `present` reads.
Stored = Mapping[str, Any]
#: Stored responses or verdicts of a sample, as JSON by slot: what `present` reads.
StoredSlots = Mapping[str, Mapping[str, Any]]
