"""Every command that reads a user file or a store, run as a real subprocess on malformed input.

The project's rule for bad input: exit code 2, one line `evalharness: error: ...` on stderr that
names the file (and the line or field when there is one), never a traceback, and the run store
left byte for byte as it was. The inputs live in `tests/malformed/` (see its README); each case
below pairs a command with one of them. Cases fail before any model loads, so each costs about
one interpreter start (plus a torch import for `run`, `score` and `train`).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_helpers import cli_env

from evalharness.store.run_store import RunStore

REPO = Path(__file__).resolve().parents[1]
MALFORMED = REPO / "tests" / "malformed"
RUN_ID = "0123456789ab"  # the one run in the pre-existing store


@dataclass(frozen=True)
class Case:
    """A command line and what its one error line must contain.

    Placeholders: `{m}` the corpus folder, `{tiny}` the tiny model, `{store}` a pre-existing run
    store, `{bad_store}` a copy of the text file posing as a store, `{foreign}` another program's
    SQLite database, `{tmp}` an empty scratch folder. `env` is added to the environment.
    """

    argv: tuple[str, ...]
    expect: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def case(name: str, argv: str, *expect: str, **env: str) -> object:
    """A `pytest.param`; `argv` is split on spaces (no argument here contains one)."""
    return pytest.param(Case(tuple(argv.split()), expect, env), id=name)


TINY_RUN = "run --model hf:{tiny} --store {store} --no-progress"
TRAIN = "train --method sft --model hf:{tiny} --out {tmp}/out"
BAD_STORE = "is not a run store (not an SQLite database)"
A_DIR = "{m}/a_directory is a directory, expected a file"

CASES = [
    # 1. Files that are not UTF-8: the error names the file and the line of the first bad byte.
    case("judge-csv-latin1", "judge --judge refusal-rules --input {m}/latin1.csv",
         "{m}/latin1.csv:3: not UTF-8 text"),
    case("score-jsonl-latin1", "score --model hf:{tiny} --input {m}/latin1.jsonl",
         "{m}/latin1.jsonl:2: not UTF-8 text"),
    case("run-mt_bench-data-latin1",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data={m}/latin1.jsonl",
         "{m}/latin1.jsonl:2: not UTF-8 text"),
    case("run-driftcaps-csv-latin1",
         TINY_RUN + " --tasks driftcaps --task-arg driftcaps.data={m}/latin1.csv",
         "{m}/latin1.csv:3: not UTF-8 text"),
    case("run-annotations-judge-latin1",
         TINY_RUN + " --tasks alpaca_eval --task-arg alpaca_eval.data=builtin"
         " --judge annotations:{m}/latin1.jsonl",
         "{m}/latin1.jsonl:2: not UTF-8 text"),
    case("run-alpaca-calibration-latin1",
         TINY_RUN + " --tasks alpaca_eval --task-arg alpaca_eval.data=builtin"
         " --task-arg alpaca_eval.calibration={m}/latin1.csv",
         "{m}/latin1.csv:3: not UTF-8 text"),
    case("run-rules-judge-latin1",
         TINY_RUN + " --tasks driftcaps --task-arg driftcaps.data=builtin"
         " --judge rules:{m}/latin1.yaml",
         "{m}/latin1.yaml:5: not UTF-8 text"),
    case("import-outputs-latin1",
         "import alpaca-eval --outputs {m}/latin1.jsonl --judge hf:{tiny} --store {store}",
         "{m}/latin1.jsonl:2: not UTF-8 text"),
    case("agreement-labels-latin1",
         f"agreement {RUN_ID} --labels {{m}}/latin1.csv --store {{store}}",
         "{m}/latin1.csv:3: not UTF-8 text"),
    case("train-config-latin1", "train --config {m}/latin1.yaml",
         "{m}/latin1.yaml:5: not UTF-8 text"),
    case("train-data-latin1", TRAIN + " --data {m}/latin1.jsonl",
         "{m}/latin1.jsonl:2: not UTF-8 text"),
    case("pipeline-latin1", "pipeline {m}/latin1.yaml", "{m}/latin1.yaml:5: not UTF-8 text"),
    case("merge-heldout-latin1",
         "merge --method greedy --models {tiny},{tiny} --out {tmp}/merged"
         " --heldout {m}/latin1.jsonl",
         "{m}/latin1.jsonl:2: not UTF-8 text"),
    # 2. MT-Bench question ids must be integers (reference answers are matched on them).
    case("run-mt_bench-question_id",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data={m}/mt_bench_question_id.jsonl",
         "{m}/mt_bench_question_id.jsonl:2: field 'question_id' must be an integer, not 'abc'"),
    # mt_bench.reference=PATH is honoured for every data= source, never silently ignored.
    case("run-mt_bench-reference-missing-builtin",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data=builtin"
         " --task-arg mt_bench.reference={tmp}/no_such.jsonl",
         "mt_bench.reference: {tmp}/no_such.jsonl: no such file"),
    case("run-mt_bench-reference-missing-hub",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data=hub"
         " --task-arg mt_bench.reference={tmp}/no_such.jsonl",
         "mt_bench.reference: {tmp}/no_such.jsonl: no such file"),
    case("run-mt_bench-reference-other-ids",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data=builtin"
         " --task-arg mt_bench.reference={m}/mt_bench_reference_other_ids.jsonl",
         "mt_bench.reference: {m}/mt_bench_reference_other_ids.jsonl: no question_id matches a"
         " question of mt_bench.data=builtin (the file has ids 101-111, the questions 1-8)"),
    # 3. A store that is not a run store is refused before the first write, by every command.
    case("run-store-text",
         "run --model hf:{tiny} --tasks mt_bench --task-arg mt_bench.data=builtin"
         " --store {bad_store}",
         "--store {bad_store} " + BAD_STORE),
    case("import-store-text",
         "import alpaca-eval --outputs {m}/latin1.jsonl --annotations {m}/latin1.jsonl"
         " --store {bad_store}",
         "--store {bad_store} " + BAD_STORE),
    case("show-store-text", "show latest --store {bad_store}", "--store {bad_store} " + BAD_STORE),
    case("runs-store-text", "runs --store {bad_store}", "--store {bad_store} " + BAD_STORE),
    case("runs-store-env-text", "runs", "EVALHARNESS_STORE={bad_store} " + BAD_STORE,
         EVALHARNESS_STORE="{bad_store}"),
    case("compare-store-text", "compare a b --store {bad_store}",
         "--store {bad_store} " + BAD_STORE),
    case("report-store-text", "report --store {bad_store} --out {tmp}/site",
         "--store {bad_store} " + BAD_STORE),
    case("agreement-store-text", "agreement a b --store {bad_store}",
         "--store {bad_store} " + BAD_STORE),
    case("drift-store-text", "drift --base a --tuned b --store {bad_store}",
         "--store {bad_store} " + BAD_STORE),
    case("pipeline-store-text", "pipeline {m}/pipeline_store_not_sqlite.yaml",
         "{m}/pipeline_store_not_sqlite.yaml:4: store tests/malformed/not_a_store.db " + BAD_STORE),
    case("runs-store-foreign-sqlite", "runs --store {foreign}",
         "--store {foreign} is not a run store (an SQLite database without a 'runs' table)"),
    # 4. Training configs: every field's type is checked, with its line, before anything loads.
    case("train-learning_rate-word", "train --config {m}/train_learning_rate_word.yaml",
         "{m}/train_learning_rate_word.yaml:6: field 'learning_rate' must be a number, not 'fast'"),
    case("train-epochs-list", "train --config {m}/train_epochs_list.yaml",
         "{m}/train_epochs_list.yaml:6: field 'epochs' must be a number, not a list [1]"),
    case("train-unknown-method", "train --config {m}/train_unknown_method.yaml",
         "{m}/train_unknown_method.yaml:1: field 'method': unknown method 'sgd-magic'"),
    case("train-missing-field", "train --config {m}/train_missing_field.yaml",
         "{m}/train_missing_field.yaml: missing training setting(s) out"),
    case("train-unknown-key", "train --config {m}/train_unknown_key.yaml",
         "{m}/train_unknown_key.yaml:5: unknown training setting(s) learning_rte",
         "did you mean learning_rate?"),
    case("train-yaml-syntax", "train --config {m}/syntax_error.yaml",
         "{m}/syntax_error.yaml:4: invalid YAML"),
    case("train-config-empty", "train --config {m}/empty.yaml",
         "{m}/empty.yaml: expected a mapping of training settings"),
    case("pipeline-bad-types", "pipeline {m}/pipeline_bad_types.yaml",
         "{m}/pipeline_bad_types.yaml:6: field 'train.max_steps' must be an integer or null, "
         "not 'many'"),
    # 5. EVALHARNESS_SCORING_IMPL is checked when the CLI starts, before the input is read.
    case("score-scoring-impl-env", "score --model hf:{tiny} --input {m}/broken_line.jsonl",
         "EVALHARNESS_SCORING_IMPL='fastest' is not a scoring implementation",
         "auto, triton, chunked, reference", EVALHARNESS_SCORING_IMPL="fastest"),
    # 6. A FastChat judge prompt is parsed when the task starts, not when judging begins.
    case("run-fastchat-prompt-braces",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data=builtin"
         " --task-arg mt_bench.judge_prompts={m}/judge_prompts_unbalanced.jsonl",
         "{m}/judge_prompts_unbalanced.jsonl:2: prompt 'single-v1-multi-turn': "
         "field 'prompt_template' has unbalanced braces"),
    # 7. A directory where a file is expected names the option it was given to.
    case("train-config-dir", "train --config {m}/a_directory", "--config: " + A_DIR),
    case("judge-input-dir", "judge --judge refusal-rules --input {m}/a_directory",
         "--input: " + A_DIR),
    case("run-alpaca-data-dir",
         TINY_RUN + " --tasks alpaca_eval --task-arg alpaca_eval.data={m}/a_directory",
         "alpaca_eval.data: " + A_DIR),
    case("run-rules-judge-dir",
         TINY_RUN + " --tasks driftcaps --task-arg driftcaps.data=builtin"
         " --judge rules:{m}/a_directory",
         "--judge: " + A_DIR),
    case("run-judge-prompts-dir",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data=builtin"
         " --task-arg mt_bench.judge_prompts={m}/a_directory",
         "mt_bench.judge_prompts: " + A_DIR),
    case("import-outputs-dir",
         "import alpaca-eval --outputs {m}/a_directory --annotations {m}/latin1.jsonl"
         " --store {store}",
         "--outputs: " + A_DIR),
    case("pipeline-dir", "pipeline {m}/a_directory", "config: " + A_DIR),
    case("runs-store-dir", "runs --store {m}/a_directory",
         "--store {m}/a_directory is a directory, expected a run store file"),
    # Malformed content the readers already caught: still one line, still no store change.
    case("score-broken-jsonl-line", "score --model hf:{tiny} --input {m}/broken_line.jsonl",
         "{m}/broken_line.jsonl:2: invalid JSON"),
    case("run-rules-yaml-types",
         TINY_RUN + " --tasks driftcaps --task-arg driftcaps.data=builtin"
         " --judge rules:{m}/rules_bad_types.yaml",
         "{m}/rules_bad_types.yaml:3: rules[0].patterns must be a list of strings"),
    # A judge whose labels the task cannot read (refusal counted as compliance, RR_u = 0).
    case("run-driftcaps-regex-judge-labels",
         TINY_RUN + " --tasks driftcaps --task-arg driftcaps.data=builtin --judge regex:sorry",
         "judge regex:sorry gives labels match, no_match",
         "needs full_compliance, full_refusal, partial_refusal", "--judge refusal-regex:sorry"),
    case("run-mt_bench-data-empty",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data={m}/empty.jsonl",
         "{m}/empty.jsonl: no questions"),
    # 8. A repeated id is an error naming both lines, never renamed (`q2-2`) and counted twice,
    # nor silently replacing the first row.
    case("run-task-yaml-duplicate-id", TINY_RUN + " --tasks {m}/task_duplicate_id",
         "{m}/task_duplicate_id/data.jsonl:3: id 'q2' appears twice (first at line 2)"),
    case("run-mt_bench-duplicate-question_id",
         TINY_RUN + " --tasks mt_bench --task-arg mt_bench.data={m}/mt_bench_duplicate_id.jsonl",
         "{m}/mt_bench_duplicate_id.jsonl:3: question_id 1 appears twice (first at line 1)"),
    case("run-driftcaps-duplicate-id",
         TINY_RUN + " --tasks driftcaps --task-arg driftcaps.data={m}/driftcaps_duplicate_id.csv",
         "{m}/driftcaps_duplicate_id.csv:4: id 'p1' appears twice (first at line 2)"),
    case("import-annotations-duplicate-instruction",
         "import alpaca-eval --outputs {m}/alpaca_outputs_duplicate.jsonl"
         " --annotations {m}/alpaca_annotations_duplicate.json --store {store}",
         "{m}/alpaca_annotations_duplicate.json[2]: instruction 'Name a river.' appears twice"
         " (first at [0])"),
    case("run-alpaca-data-duplicate-instruction",
         TINY_RUN + " --tasks alpaca_eval"
         " --task-arg alpaca_eval.data={m}/alpaca_outputs_duplicate.jsonl",
         "{m}/alpaca_outputs_duplicate.jsonl:3: instruction 'Name a river.' appears twice"
         " (first at line 1)"),
    case("run-outputs-duplicate-instruction",
         "run --model outputs:{m}/alpaca_outputs_duplicate.jsonl --store {store} --no-progress"
         " --tasks alpaca_eval --task-arg alpaca_eval.data=builtin --judge hf:{tiny}",
         "{m}/alpaca_outputs_duplicate.jsonl:3: instruction 'Name a river.' appears twice"
         " (first at line 1)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run store (WAL, one finished run with one task), closed so it is one file."""
    path = tmp_path_factory.mktemp("template") / "store.sqlite"
    store = RunStore(path)
    store.begin_run(RUN_ID, "hf:model", "rules:refusal", {"tasks": ["driftcaps"]}, {})
    store.put_task(RUN_ID, "driftcaps", 1, {"data_hash": "x"})
    store.put_samples(RUN_ID, "driftcaps", [("p1", {"prompt": "hi", "label": "safe"})])
    store.finish_run(RUN_ID)
    store.close()
    return path


def foreign_database(path: Path) -> Path:
    """Another program's SQLite file: adding the run-store tables would change it."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('mine')")
    connection.close()
    return path


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`: a store, its -wal/-shm files and any new output."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("bad", CASES)
def test_malformed_input_is_one_line_exit_2_and_leaves_the_store_alone(
    bad: Case, store_template: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(store_template, work / "store.sqlite")
    shutil.copy(MALFORMED / "not_a_store.db", work / "bad_store.db")
    foreign_database(work / "foreign.sqlite")
    places = {
        "m": str(MALFORMED),
        "store": str(work / "store.sqlite"),
        "bad_store": str(work / "bad_store.db"),
        "foreign": str(work / "foreign.sqlite"),
        "tmp": str(work),
    }
    if any("{tiny}" in arg for arg in bad.argv):
        places["tiny"] = str(request.getfixturevalue("tiny_model_dir"))
    argv = [arg.format(**places) for arg in bad.argv]
    env = {"EVALHARNESS_STORE": places["store"], "EVALHARNESS_SCORING_IMPL": ""}
    env.update({key: value.format(**places) for key, value in bad.env.items()})
    corpus_before = fingerprint(MALFORMED)
    before = fingerprint(work)

    done = subprocess.run(
        [sys.executable, "-m", "evalharness", *argv],
        cwd=REPO,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("evalharness: error: "), lines[0]
    for fragment in bad.expect:
        assert fragment.format(**places) in lines[0]
    assert done.returncode == 2, lines[0]
    assert done.stdout == ""
    assert fingerprint(work) == before, "the store (or its folder) changed"
    assert fingerprint(MALFORMED) == corpus_before


def test_numbers_written_as_strings_are_numbers(tmp_path: Path) -> None:
    """PyYAML reads `5e-6` and `1e3` as strings; a training config means them as numbers."""
    from evalharness.cli import build_parser
    from evalharness.cli.train import config_from_args

    path = tmp_path / "train.yaml"
    path.write_text(
        "method: sft\nmodel: hf:m\ndata: rows.jsonl\nout: o\n"
        "learning_rate: 5e-6\nmax_steps: 1e3\nlora: {rank: '8', target_modules: [q_proj]}\n"
    )
    config = config_from_args(build_parser().parse_args(["train", "--config", str(path)]))
    assert config.learning_rate == 5e-6 and isinstance(config.learning_rate, float)
    assert config.max_steps == 1000 and isinstance(config.max_steps, int)
    assert config.lora.rank == 8 and config.lora.target_modules == ["q_proj"]
