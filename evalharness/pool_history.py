"""Pool keys, and the record of every change a pooled fit makes to a stored run's numbers.

Some metrics (AlpacaEval's length-controlled win rate) are fitted over every stored run in a
pool (`Task.pooled_metrics`), so a new run changes the numbers of the runs stored before it.
Two rules keep that honest:

* Only comparable runs share a fit. The pool key (`pool_key`) covers the task, the judge's
  `pool_hash`, the data, the baseline the task compares against and the task's own
  `pool_fields` (for AlpacaEval the length-control variant and the difficulty values), so
  runs against another baseline or fitted with another variant never touch each other.
* A stored number never changes without a record. Each run's stored task entry keeps a
  `pool_history`, oldest first, whose last record is what the entry shows now:

      {"fit_id", "date", "n_runs", "runs", "metrics", "ci"}

  The first record (`fit_id` "own") holds the values the run's own aggregate gave before any
  joint fit replaced them (for AlpacaEval the single-run fit); every later one is a joint fit.
  A joint fit's id is a hash of the pool key and every member's stored scores (`fit_id`), so
  the same id means the same inputs and the same numbers, and `runs` names the members: the
  fit can be recomputed from the store. `date` is when the fit was made (UTC, ISO 8601); a
  fit that gives what the run already shows is not recorded again, so re-running the same
  command adds nothing. The entry's metrics also carry `pool_fit_id` and `pool_fit_date`, so
  `show` prints which fit its numbers come from.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.requests import canonical_json, sha256_hex
from evalharness.tasks.base import PooledResult

#: `fit_id` of the values a run's own aggregate gave, before any joint fit.
OWN = "own"


def pool_key(
    task: str,
    judge_pool_hash: str,
    data_hash: str,
    baseline: Mapping[str, Any] | None,
    fields: Mapping[str, Any],
) -> str:
    """The key runs must share to be fitted together.

    `baseline` is what the engine stored for the task's baseline (None: the data's reference
    outputs, which `data_hash` covers; {"run": id}: a stored run's answers; {"model": identity
    hash, "spec": text}: a model's answers). The spec text is left out: two spellings of the
    same model give the same answers.
    """
    baseline_key = {k: v for k, v in (baseline or {}).items() if k != "spec"} or None
    material = [task, judge_pool_hash, data_hash, baseline_key, dict(fields)]
    return sha256_hex(canonical_json(material))


def fit_id(pool: str, scores: Mapping[str, Any]) -> str:
    """Id of a joint fit: the pool key and every member's stored (sample id, scores) pairs."""
    return sha256_hex(canonical_json({"pool": pool, "scores": scores}))[:12]


def utc_date(timestamp: float | None = None) -> str:
    """UTC time, ISO 8601 to the second (now when `timestamp` is None)."""
    moment = (
        datetime.datetime.now(datetime.UTC)
        if timestamp is None
        else datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    )
    return moment.isoformat(timespec="seconds")


@dataclass(frozen=True)
class Fit:
    """One joint fit over a pool: its id, when it was made and the runs it fitted."""

    fit_id: str
    date: str
    runs: Sequence[str]


def _record(
    fit: str, date: str, runs: Sequence[str], metrics: Mapping[str, Any], ci: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "fit_id": fit,
        "date": date,
        "n_runs": len(runs),
        "runs": list(runs),
        "metrics": dict(metrics),
        "ci": {k: list(v) for k, v in ci.items()},
    }


def _show(entry: dict[str, Any], record: Mapping[str, Any]) -> None:
    """Make the entry show `record`'s values; a metric it gives no interval loses its old one."""
    ci = entry.setdefault("ci", {})
    for name, value in record["metrics"].items():
        entry["metrics"][name] = value
        if name in record["ci"]:
            ci[name] = list(record["ci"][name])
        else:
            ci.pop(name, None)
    entry["metrics"]["pool_fit_id"] = record["fit_id"]
    entry["metrics"]["pool_fit_date"] = record["date"]


def apply_fit(
    entry: dict[str, Any], run_id: str, update: PooledResult, fit: Fit, own_date: str
) -> None:
    """Merge a joint fit's `update` into a run's stored task `entry`, recording it.

    Before the first joint fit the values the entry shows (its own aggregate's) are recorded
    as the "own" record, dated `own_date` (when the run was scored), so nothing shown before
    is lost. (In a store written before this record existed, those values may come from an
    unrecorded joint fit; the task's own description of the fit, such as AlpacaEval's
    `lc_fit`, is among the recorded metrics and says so.)
    """
    history = entry.setdefault("pool_history", [])
    names = list(update.metrics)
    if not history:
        shown_ci = entry.get("ci") or {}
        history.append(
            _record(
                OWN,
                own_date,
                [run_id],
                {name: entry["metrics"].get(name) for name in names},
                {name: shown_ci[name] for name in names if name in shown_ci},
            )
        )
    new = _record(
        fit.fit_id,
        fit.date,
        fit.runs,
        update.metrics,
        {name: interval for name, interval in update.ci.items() if name in update.metrics},
    )
    last = history[-1]
    if (last["fit_id"], last["metrics"], last["ci"]) != (new["fit_id"], new["metrics"], new["ci"]):
        history.append(new)
    _show(entry, history[-1])


def carry_over(previous: Mapping[str, Any] | None, entry: dict[str, Any]) -> None:
    """A re-scored run keeps its `pool_history` and goes on showing the latest recorded fit
    (until `apply_fit` records the next one), instead of starting its record afresh."""
    history = (previous or {}).get("pool_history")
    if history:
        entry["pool_history"] = list(history)
        _show(entry, history[-1])
