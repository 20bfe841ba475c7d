"""`evalharness methods` lists the tuning-free methods (model specs) beside the losses."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_cli

from evalharness.backends.args_decoding import ArgsBackend
from evalharness.backends.deal import DealBackend
from evalharness.backends.spec import WRAPPER_OPTIONS

TUNING_FREE = {"best_of_n": "bon:", "urial": "urial:", "args": "args:", "deal": "deal:"}


def test_methods_json_lists_tuning_free_methods_with_spec_and_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "methods", "--json")
    assert code == 0
    rows = json.loads(out)
    free = {row["name"]: row for row in rows if row["tuning_free"]}
    assert set(free) == set(TUNING_FREE)
    for name, prefix in TUNING_FREE.items():
        row = free[name]
        assert row["spec"].startswith(prefix)
        assert row["kind"] in ("decoding-time", "in-context")
        assert row["data"] is None and row["reference"] is False
        assert len(row["summary"]) > 20
        # Every option the spec parser accepts is listed, with a meaning.
        assert set(WRAPPER_OPTIONS.get(name, {})) <= set(row["options"])
        assert all(len(meaning) > 10 for meaning in row["options"].values())
    assert free["urial"]["kind"] == "in-context"
    assert {free[n]["kind"] for n in ("best_of_n", "args", "deal")} == {"decoding-time"}
    assert free["args"]["hyperparameters"] == ArgsBackend.defaults
    assert free["deal"]["hyperparameters"] == DealBackend.defaults
    # The training methods keep their fields and say they are trained.
    dpo = next(row for row in rows if row["name"] == "dpo")
    assert dpo["tuning_free"] is False
    assert {"name", "data", "reference", "hyperparameters", "summary", "options"} <= set(dpo)
    assert dpo["data"] == "pairwise" and dpo["reference"] is True


def test_methods_table_shows_tuning_free_specs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    assert "tuning-free methods" in out
    for spec in ("urial:[prompt=FILE:]MODEL", "bon:N:SCORER:MODEL"):
        assert spec in out
    assert "args w: reward weight" in out and "deal lookahead:" in out
