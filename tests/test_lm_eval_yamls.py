"""lm-eval task YAMLs run as published (`--tasks path/to/task.yaml` or a folder of them).

Held to lm-evaluation-harness itself: the same YAMLs (an `include:`d base with `description`, a
`!function` process_docs helper and digit-text targets; zero-shot and 5-shot multiple choice;
a `generate_until` task with `until`, regex filters and exact_match options, 2-shot with the
`first_n` sampler) run by `lm_eval.simple_evaluate(model="hf")` and by `evalharness run` on the
same tiny checkpoint must send the same request strings and give the same per-question acc,
acc_norm, generated text, filtered answer and exact_match. Both evaluations run once per module.
Malformed YAMLs are one line naming file:line and the field.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, run_json
from scipy.stats import binomtest

pytest.importorskip("lm_eval")

QUESTIONS = [
    ("How many legs does a spider have", ["6", "8", "10", "4"], "8"),
    ("What is frozen water called", ["steam", "ice", "fog", "dew"], "ice"),
    ("How many wheels does a bicycle have", ["2", "4", "3", "1"], "2"),
    ("Which planet is closest to the Sun", ["Mercury", "Mars", "Jupiter", "Neptune"], "Mercury"),
    ("What do bees make", ["milk", "silk", "wax paper", "honey"], "honey"),
    ("How many sides does a triangle have", ["3", "2", "1", "0"], "3"),
    ("What is the opposite of hot", ["cold", "loud", "heavy", "early"], "cold"),
    ("How many days are in a week", ["1", "7", "2", "5"], "7"),
    ("What do you call a baby cat", ["puppy", "calf", "kitten", "foal"], "kitten"),
    ("Which organ pumps blood", ["lung", "liver", "heart", "kidney"], "heart"),
    ("How many hours are in a day", ["12", "24", "2", "4"], "24"),
    ("What does a thermometer measure", ["weight", "distance", "temperature", "speed"],
     "temperature"),
]  # fmt: skip
TRAIN = [
    ("What colour is the sky", "blue"),
    ("What is two plus two", "four"),
    ("What do cows drink", "water"),
]

UTILS = '''\
def process_docs(dataset):
    """Adds the query field the prompts read (and proves the helper ran)."""
    return dataset.map(lambda doc: {"query": doc["question"].strip() + "?"})
'''
BASE_MC = """\
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
test_split: test
fewshot_split: test
output_type: multiple_choice
process_docs: !function utils.process_docs
description: "Answer each question.\\n\\n"
doc_to_text: "Question: {{{{query}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer_text
fewshot_delimiter: "\\n\\n"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN = """\
task: gen_short
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
test_split: test
fewshot_split: train
num_fewshot: 2
fewshot_config:
  sampler: first_n
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}?\\nA:"
doc_to_target: answer_text
generation_kwargs:
  until: ["u", "\\n"]
  max_gen_toks: 8
  do_sample: false
  temperature: 0.0
filter_list:
  - name: first-word
    filter:
      - function: regex
        regex_pattern: "(\\\\w+)"
      - function: take_first
  - name: raw
    filter:
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
    regexes_to_ignore: ["[^ae]"]
"""
TASKS = ("mc_zero", "mc_five", "gen_short")
MC_METRICS = ("acc", "acc_norm")
GEN_METRICS = ("exact_match:first-word", "exact_match:raw")


def write_tasks(folder: Path) -> Path:
    """The YAMLs, their data (JSONL) and the process_docs helper; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    test, train = folder / "test.jsonl", folder / "train.jsonl"
    test.write_text(
        "".join(
            json.dumps({"question": f" {q} ", "choices": c, "answer_text": a}) + "\n"
            for q, c, a in QUESTIONS
        )
    )
    train.write_text(
        "".join(
            json.dumps({"question": q, "choices": [a, "none"], "answer_text": a}) + "\n"
            for q, a in TRAIN
        )
    )
    (folder / "utils.py").write_text(UTILS)
    (folder / "_base_mc.yaml").write_text(BASE_MC.format(test=test))
    (folder / "mc_zero.yaml").write_text("include: _base_mc.yaml\ntask: mc_zero\n")
    (folder / "mc_five.yaml").write_text("include: _base_mc.yaml\ntask: mc_five\nnum_fewshot: 5\n")
    (folder / "gen.yaml").write_text(GEN.format(train=train, test=test))
    return folder


@pytest.fixture(scope="module")
def datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`datasets` writes its Arrow cache here, not under the user's home."""
    datasets_config = pytest.importorskip("datasets.config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets"))
        yield


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("lm-eval-tasks"))


@pytest.fixture(scope="module")
def lm_eval_results(tiny_model_dir: Path, tasks_dir: Path, datasets_cache: None) -> dict:
    """lm-eval's own `hf` evaluation of the folder's tasks, with logged samples."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_model_dir},dtype=float32",
        tasks=list(TASKS),
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        device="cpu",
        batch_size=4,
        log_samples=True,
    )
    assert results is not None
    return results


@pytest.fixture(scope="module")
def ours(tiny_model_dir: Path, tasks_dir: Path, datasets_cache: None, tmp_path_factory) -> dict:
    """`evalharness run --tasks FOLDER` on the same checkpoint, in a store of its own."""
    from evalharness.cli import main

    store = tmp_path_factory.mktemp("store") / "store.sqlite"

    args = ["run", *tiny(tiny_model_dir), "--tasks", str(tasks_dir), "--store", str(store)]
    result = run_main_json(main, [*args, "--json"])
    return {"result": result, "store": store, "args": args}


def tiny(model_dir: Path) -> list[str]:
    return ["--model", f"hf:{model_dir}", "--dtype", "float32", "--no-progress"]


def run_main_json(main: Any, argv: list[str]) -> dict:
    """`main(argv)` with stdout captured (module-scoped fixtures have no capsys)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, out.getvalue()[-2000:]
    return json.loads(out.getvalue())


def sent_requests(store: Path, run_id: str, task: str) -> dict[str, dict[str, dict]]:
    """sample id -> slot -> the request the engine sent to the backend (as stored)."""
    with sqlite3.connect(store) as conn:
        rows = conn.execute(
            "SELECT l.sample_id, l.slot, r.request_json FROM links l JOIN responses r "
            "ON r.cache_key = l.cache_key WHERE l.run_id = ? AND l.task = ? AND l.kind = ?",
            (run_id, task, "response"),
        ).fetchall()
    found: dict[str, dict[str, dict]] = {}
    for sample_id, slot, request in rows:
        found.setdefault(sample_id, {})[slot] = json.loads(request)
    return found


def logged(lm_eval_results: dict, task: str) -> dict[str, list[dict]]:
    """doc id -> lm-eval's logged samples of the task (one per filter)."""
    by_doc: dict[str, list[dict]] = {}
    for sample in lm_eval_results["samples"][task]:
        by_doc.setdefault(str(sample["doc_id"]), []).append(sample)
    return by_doc


def stored_samples(ours: dict, task: str) -> dict[str, dict]:
    from evalharness.store.run_store import RunStore

    samples = RunStore(ours["store"]).get_samples(ours["result"]["run_id"], task)
    return {s["sample_id"]: s for s in samples}


@pytest.mark.parametrize("task", ["mc_zero", "mc_five"])
def test_multiple_choice_requests_and_scores_equal_lm_eval(
    task: str, lm_eval_results: dict, ours: dict
) -> None:
    theirs = logged(lm_eval_results, task)
    mine = stored_samples(ours, task)
    sent = sent_requests(ours["store"], ours["result"]["run_id"], task)
    assert set(mine) == set(theirs) and len(mine) == len(QUESTIONS)
    for doc_id, (sample,) in theirs.items():
        requests = [sent[doc_id][f"choice_{i}"] for i in range(len(sample["arguments"]))]
        assert [[r["context"], r["continuation"]] for r in requests] == [
            list(a) for a in sample["arguments"]
        ], doc_id
        for metric in MC_METRICS:
            assert mine[doc_id]["scores"][metric] == sample[metric], (doc_id, metric)
    prompts = [s["arguments"][0][0] for (s,) in theirs.values()]
    assert all(p.startswith("Answer each question.\n\n") for p in prompts)  # description
    assert all("?\nAnswer:" in p for p in prompts)  # the helper's `query` field
    if task == "mc_five":  # five demonstrations, never the question itself
        for (sample,) in theirs.values():
            context = sample["arguments"][0][0]
            assert context.count("Answer:") == 6
            own = "Question: " + sample["doc"]["query"]
            assert context.count(own) == 1
    entry = ours["result"]["tasks"][task]
    for metric in MC_METRICS:
        assert entry["metrics"][metric] == pytest.approx(
            lm_eval_results["results"][task][f"{metric},none"], abs=1e-12
        )
        # acc and acc_norm are rates of 0/1 outcomes: Wilson's interval, as scipy gives it.
        n = len(QUESTIONS)
        hits = round(entry["metrics"][metric] * n)
        wilson = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert entry["ci"][metric] == pytest.approx([wilson.low, wilson.high], abs=1e-12)
        assert entry["ci_method"][metric] == "wilson"


def test_multiple_choice_scores_tell_right_from_wrong(ours: dict) -> None:
    """The comparisons above see both outcomes, and acc and acc_norm disagree somewhere."""
    scores = [s["scores"] for t in ("mc_zero", "mc_five") for s in stored_samples(ours, t).values()]
    assert {s["acc"] for s in scores} == {0.0, 1.0}
    assert any(s["acc"] != s["acc_norm"] for s in scores)


def test_generation_text_filters_and_exact_match_equal_lm_eval(
    lm_eval_results: dict, ours: dict
) -> None:
    theirs = logged(lm_eval_results, "gen_short")
    mine = stored_samples(ours, "gen_short")
    run_id = ours["result"]["run_id"]
    sent = sent_requests(ours["store"], run_id, "gen_short")
    from evalharness.store.run_store import RunStore

    answers = RunStore(ours["store"]).get_run_responses(run_id, "gen_short")
    assert set(mine) == set(theirs) and len(mine) == len(QUESTIONS)
    for doc_id, samples in theirs.items():
        context, kwargs = samples[0]["arguments"][0]
        request = sent[doc_id]["output"]
        assert request["prompt"] == context and request["stop"] == kwargs["until"]
        assert request["sampling"]["max_new_tokens"] == kwargs["max_gen_toks"] == 8
        assert request["sampling"]["temperature"] == 0.0
        assert answers[doc_id]["output"]["text"] == samples[0]["resps"][0][0], doc_id
        for sample in samples:
            name = sample["filter"]
            assert mine[doc_id]["scores"]["filtered"][name] == sample["filtered_resps"][0]
            key = f"exact_match:{name}"
            assert mine[doc_id]["scores"][key] == sample["exact_match"], (doc_id, key)
    # first_n: the same two training examples open every prompt.
    assert all(s[0]["arguments"][0][0].startswith("Q: What colour") for s in theirs.values())
    # Texts cut at `until` and kept verbatim (a space before the stop), both seen here.
    texts = [a["output"]["text"] for a in answers.values()]
    assert any(t != t.strip() for t in texts)
    assert any(a["output"]["finish_reason"] == "stop" for a in answers.values())
    values = [s["scores"][k] for s in mine.values() for k in GEN_METRICS]
    assert set(values) == {0.0, 1.0}
    entry = ours["result"]["tasks"]["gen_short"]
    for key in GEN_METRICS:
        name = key.split(":")[1]
        assert entry["metrics"][key] == pytest.approx(
            lm_eval_results["results"]["gen_short"][f"exact_match,{name}"], abs=1e-12
        )


def test_run_time_num_fewshot_gives_lm_evals_prompts(
    lm_eval_results: dict, tasks_dir: Path, datasets_cache: None
) -> None:
    """`num_fewshot` at run time (lm_eval --num_fewshot): mc_zero with 5 shots has exactly the
    prompts lm-eval built for mc_five (same YAML but for num_fewshot)."""
    from evalharness.tasks.registry import get_task_class

    task = get_task_class(str(tasks_dir / "mc_zero.yaml"))({"num_fewshot": "5"})
    data = task.load()
    assert data.settings["num_fewshot"] == 5
    theirs = logged(lm_eval_results, "mc_five")
    for sample in data.samples:
        requests = task.requests(sample, {})
        (logged_sample,) = theirs[sample.id]
        assert requests["choice_0"].context == logged_sample["arguments"][0][0]


def test_rerun_is_cached_and_results_show_compare_and_report(
    ours: dict, tiny_model_dir: Path, tasks_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    store = str(ours["store"])
    again = run_json(capsys, *ours["args"])
    assert again["run_id"] == ours["result"]["run_id"]
    assert again["calls_made"]["model"] == 0
    assert again["tasks"] == ours["result"]["tasks"]
    # Another run of one YAML (5 shots via --num-fewshot) pairs with the first in `compare`.
    other = run_json(
        capsys,
        "run",
        *tiny(tiny_model_dir),
        "--tasks",
        str(tasks_dir / "mc_zero.yaml"),
        "--num-fewshot",
        "5",
        "--store",
        store,
        "--limit",
        "4",
    )
    assert other["run_id"] != ours["result"]["run_id"]
    code, out, err = run_cli(
        capsys, "compare", ours["result"]["run_id"], other["run_id"], "--store", store, "--json"
    )
    assert code == 0, err
    rows = {row["metric"]: row for row in json.loads(out)["tasks"]["mc_zero"]["metrics"]}
    assert rows["acc"]["kind"] == "binary" and rows["acc"]["n_pairs"] == 4
    site = tmp_path / "site"
    code, _, err = run_cli(capsys, "report", "--store", store, "--out", str(site))
    assert code == 0, err
    pages = [p.read_text() for p in site.rglob("*.html")]
    assert any("gen_short" in page for page in pages)
    assert not any("not registered in this installation" in page for page in pages)


def test_building_a_task_makes_no_network_call(
    tasks_dir: Path, datasets_cache: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalharness.tasks.registry import task_classes

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network call {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for task_class in task_classes(str(tasks_dir)):
        assert task_class({}).load(limit=2).samples


def test_relative_data_files_beside_the_yaml(tmp_path: Path, datasets_cache: None) -> None:
    from evalharness.tasks.registry import get_task_class

    folder = write_tasks(tmp_path / "tasks")
    text = (folder / "_base_mc.yaml").read_text().replace(str(folder / "test.jsonl"), "test.jsonl")
    (folder / "_base_mc.yaml").write_text(text)
    data = get_task_class(str(folder / "mc_zero.yaml"))({}).load()
    assert len(data.samples) == len(QUESTIONS)


def malformed(name: str, file: str, edit: tuple[str, str] | None, expect: str) -> Any:
    return pytest.param(file, edit, expect, id=name)


MALFORMED = [
    malformed("unknown-field", "mc_zero.yaml", ("task: mc_zero", "task: mc_zero\nnum_fewshots: 2"),
              "mc_zero.yaml:3: field 'num_fewshots': not an lm-eval task field; did you mean "
              "'num_fewshot'?"),
    malformed("unknown-field-in-include", "_base_mc.yaml", ("test_split:", "tst_split:"),
              "_base_mc.yaml:5: field 'tst_split': not an lm-eval task field; did you mean "
              "'test_split'?"),
    malformed("missing-helper-file", "utils.py", None,
              "_base_mc.yaml:8: field 'process_docs': !function utils.process_docs: no utils.py "
              "beside the YAML"),
    malformed("missing-helper-function", "utils.py", ("def process_docs", "def other"),
              "_base_mc.yaml:8: field 'process_docs': !function utils.process_docs: utils.py has "
              "no 'process_docs'"),
    malformed("helper-outside-folder", "_base_mc.yaml", ("utils.process_docs", "os.path.join"),
              "_base_mc.yaml:8: field 'process_docs': !function os.path.join: no os/path.py "
              "beside the YAML"),
    malformed("unknown-metric", "_base_mc.yaml", ("metric: acc_norm", "metric: acc_nrom"),
              "_base_mc.yaml:16: field 'metric_list[1].metric': unknown lm-eval metric "
              "'acc_nrom'; did you mean 'acc_norm'?"),
    malformed("unknown-filter", "gen.yaml", ("function: regex", "function: regexp"),
              "gen.yaml:23: field 'filter_list[0].filter[0].function': unknown filter 'regexp'; "
              "did you mean 'regex'?"),
    malformed("unsupported-generation-kwarg", "gen.yaml", ("do_sample: false", "top_k: 5"),
              "gen.yaml:18: field 'generation_kwargs.top_k': not supported"),
    malformed("missing-include", "mc_zero.yaml", ("_base_mc.yaml", "_base.yaml"),
              "mc_zero.yaml:1: field 'include': no such file"),
    malformed("missing-data-file", "_base_mc.yaml", ("test.jsonl", "tset.jsonl"),
              "_base_mc.yaml:4: field 'dataset_kwargs.data_files.test': no such file"),
    malformed("rolling-loglikelihood", "_base_mc.yaml",
              ("output_type: multiple_choice", "output_type: loglikelihood_rolling"),
              "_base_mc.yaml:7: field 'output_type': 'loglikelihood_rolling': use "
              "multiple_choice,"),
    malformed("bad-yaml", "mc_zero.yaml", ("task: mc_zero", "task: [mc_zero"),
              "mc_zero.yaml:3: invalid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "edit", "expect"), MALFORMED)
def test_malformed_lm_eval_yaml_is_one_line_naming_file_line_and_field(
    file: str,
    edit: tuple[str, str] | None,
    expect: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = write_tasks(tmp_path / "tasks")
    target = folder / file
    if edit is None:
        target.unlink()
    else:
        assert edit[0] in target.read_text()
        target.write_text(target.read_text().replace(edit[0], edit[1], 1))
    task = folder / ("gen.yaml" if file == "gen.yaml" else "mc_zero.yaml")
    code, _, err = run_cli(capsys, "run", *tiny(tiny_model_dir), "--tasks", str(task))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"evalharness: error: {folder}/{expect}"), lines[0]


def test_without_lm_eval_a_yaml_names_itself_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalharness.errors import InputError
    from evalharness.tasks.registry import get_task_class

    folder = write_tasks(tmp_path / "tasks")
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    with pytest.raises(InputError) as raised:
        get_task_class(str(folder / "mc_zero.yaml"))
    assert str(raised.value) == (
        f"{folder / 'mc_zero.yaml'}: an lm-eval task YAML needs lm-eval; install it with: "
        "pip install 'evalharness[lm-eval]'"
    )


def test_a_helper_runs_only_from_the_yamls_own_folder(tmp_path: Path) -> None:
    """`!function` never imports an installed module (lm-eval's loader would): a YAML naming
    `os.system` is refused before anything is imported."""
    from evalharness.errors import InputError
    from evalharness.tasks.registry import get_task_class

    folder = write_tasks(tmp_path / "tasks")
    base = folder / "_base_mc.yaml"
    base.write_text(base.read_text().replace("utils.process_docs", "os.system"))
    task = get_task_class(str(folder / "mc_zero.yaml"))({})
    with pytest.raises(InputError, match=r"!function os.system: no os\.py beside the YAML"):
        task.load()


def test_a_stop_string_counts_only_in_generated_text(tiny_model_dir: Path) -> None:
    """lm-eval's `hf` model (and OpenAI's API, vLLM) stop on a stop string found in the
    generated text. transformers' `stop_strings` also match across the prompt's end: with a
    stop that is the prompt's last characters plus the first generated token, generation ended
    after that one token. It runs on, as lm-eval's would."""
    from evalharness.backends import load_backend
    from evalharness.backends.spec import parse_model_spec
    from evalharness.engine.requests import CompleteRequest, SamplingParams

    backend = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    prompt = "Question: what is the answer\nAnswer:"  # its first new token decodes alone

    def complete(tokens: int, stop: tuple[str, ...] = ()) -> Any:
        sampling = SamplingParams(max_new_tokens=tokens)
        return backend.complete([CompleteRequest(prompt, sampling, stop, verbatim=True)])[0]

    first, free = complete(1).text, complete(6)
    assert first and free.text.startswith(first)
    stop = prompt[-2:] + first
    assert stop not in free.text
    spanning = complete(6, (stop,))
    assert spanning.text == free.text and spanning.n_generated_tokens == 6


def test_verbatim_leaves_the_cache_keys_of_other_requests_unchanged() -> None:
    """Requests stored before `verbatim` existed keep their cache keys (and answers)."""
    from evalharness.engine.requests import CompleteRequest, canonical_json

    plain = json.loads(canonical_json(CompleteRequest("Q:", stop=("\n",))))
    assert plain == {
        "kind": "complete",
        "prompt": "Q:",
        "sampling": {"max_new_tokens": 512, "seed": 0, "temperature": 0.0, "top_p": 1.0},
        "stop": ["\n"],
    }
    assert json.loads(canonical_json(CompleteRequest("Q:", verbatim=True)))["verbatim"] is True
