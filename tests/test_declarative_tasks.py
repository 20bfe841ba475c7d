"""Tasks without Python (`tasks/declarative`): a folder with task.yaml and data runs like any task.

The multiple-choice example is held to lm-evaluation-harness itself: the same task written as an
lm-eval YAML over the same data, run by lm-eval's `hf` model on the same tiny checkpoint, must
give the same per-document `acc` and `acc_norm`. The judged example runs with the tiny model
as its own judge (a pipeline check, not a grade): cached re-runs, `compare` between two stored
runs of a folder task and the report's sample views. Malformed task.yaml files are one line
naming file:line and the field, exit code 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, run_json
from scipy.stats import binomtest

from evalharness.store.run_store import RunStore

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "tasks" / "declarative" / "examples"

LM_EVAL_YAML = """\
task: example_mc_lm_eval
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{ question }}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def tiny(model_dir: Path) -> list[str]:
    return ["--model", f"hf:{model_dir}", "--dtype", "float32", "--no-progress"]


def lm_eval_per_doc(model_dir: Path, data: Path, folder: Path) -> dict[str, dict[str, float]]:
    """id -> {acc, acc_norm} from lm-eval's own evaluator on the equivalent YAML task."""
    pytest.importorskip("lm_eval")
    import lm_eval
    from lm_eval.tasks import TaskManager

    (folder / "example_mc_lm_eval.yaml").write_text(LM_EVAL_YAML.format(data=data))
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32",
        tasks=["example_mc_lm_eval"],
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        device="cpu",
        batch_size=4,
        log_samples=True,
    )
    assert results is not None
    return {
        sample["doc"]["id"]: {"acc": sample["acc"], "acc_norm": sample["acc_norm"]}
        for sample in results["samples"]["example_mc_lm_eval"]
    }


def test_multiple_choice_example_matches_lm_eval_acc_and_acc_norm(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets_config = pytest.importorskip("datasets.config")
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    store = tmp_path / "store.sqlite"
    result = run_json(
        capsys, "run", *tiny(tiny_model_dir), "--tasks", "example_mc", "--store", str(store)
    )
    entry = result["tasks"]["example_mc"]
    assert entry["n"] == 20 and result["calls_made"]["model"] == 80  # 20 questions x 4 choices
    assert set(entry["ci"]) == {"acc", "acc_norm"}
    assert entry["ci_method"] == {"acc": "wilson", "acc_norm": "wilson"}
    correct = round(entry["metrics"]["acc"] * 20)
    wilson = binomtest(correct, 20).proportion_ci(0.95, method="wilson")
    assert entry["ci"]["acc"] == pytest.approx([wilson.low, wilson.high])

    lm_eval_dir = tmp_path / "lm_eval_tasks"
    lm_eval_dir.mkdir()
    theirs = lm_eval_per_doc(tiny_model_dir, EXAMPLES / "mc" / "data.jsonl", lm_eval_dir)
    ours = {
        s["sample_id"]: s["scores"]
        for s in RunStore(store).get_samples(result["run_id"], "example_mc")
    }
    assert set(ours) == set(theirs)
    for sample_id, scores in ours.items():
        assert scores["acc"] == theirs[sample_id]["acc"], sample_id
        assert scores["acc_norm"] == theirs[sample_id]["acc_norm"], sample_id
    for metric in ("acc", "acc_norm"):
        expected = sum(t[metric] for t in theirs.values()) / len(theirs)
        assert entry["metrics"][metric] == pytest.approx(expected, abs=1e-12)
    # The two rules disagree on some question, so the test tells them apart.
    assert any(s["pred"] != s["pred_norm"] for s in ours.values())


def rubric_folder(tmp_path: Path, name: str, system: str) -> Path:
    """A copy of the judged example under another name, with short answers and `system`."""
    folder = tmp_path / f"{name}-{len(system)}"
    shutil.copytree(EXAMPLES / "rubric", folder)
    text = (folder / "task.yaml").read_text()
    text = text.replace("name: example_rubric", f"name: {name}")
    text = text.replace("max_new_tokens: 256", "max_new_tokens: 8")
    text = text.replace("system: You are a concise, helpful assistant.", f"system: {system}")
    (folder / "task.yaml").write_text(text)
    return folder


def test_judged_folder_task_caches_compares_and_presents(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.sqlite"
    common = [*tiny(tiny_model_dir), "--store", str(store), "--limit", "5"]
    folder_a = rubric_folder(tmp_path, "my_rubric", "Answer briefly.")
    folder_b = rubric_folder(tmp_path, "my_rubric", "Answer in great detail, please.")

    first = run_json(capsys, "run", *common, "--tasks", str(folder_a))
    entry = first["tasks"]["my_rubric"]
    assert first["calls_made"] == {"model": 5, "judge": 50}  # probs: 10 scores per rating
    assert "rating" in entry["metrics"] and 1.0 <= entry["metrics"]["rating"] <= 10.0
    assert "rating" in entry["ci"] and entry["ci_method"]["rating"] == "bootstrap-percentile"
    assert any("judged by the model itself" in w for w in first["warnings"])

    again = run_json(capsys, "run", *common, "--tasks", str(folder_a))
    assert again["run_id"] == first["run_id"]
    assert again["calls_made"] == {"model": 0, "judge": 0}
    assert again["tasks"]["my_rubric"]["metrics"] == entry["metrics"]

    other = run_json(capsys, "run", *common, "--tasks", str(folder_b))
    assert other["run_id"] != first["run_id"]  # another task.yaml is another run

    code, out, err = run_cli(
        capsys, "compare", first["run_id"], other["run_id"], "--store", str(store), "--json"
    )
    assert code == 0, err
    compared = json.loads(out)["tasks"]["my_rubric"]
    rows = {row["metric"]: row for row in compared["metrics"]}
    assert rows["rating"]["kind"] == "rating" and rows["rating"]["n_pairs"] == 5

    from evalharness.reports.collect import sample_records

    records = list(sample_records(RunStore(store), first["run_id"], "my_rubric"))
    assert len(records) == 5 and not any(r.fallback for r in records)
    view = records[0].view
    assert view.prompt == ["Explain in two sentences why the sky looks blue."]
    assert view.verdicts and view.verdicts[0]["score"] == view.score

    # The report reads the folder task's runs with its class, not the generic fallback.
    site = tmp_path / "site"
    code, _, err = run_cli(capsys, "report", "--store", str(store), "--out", str(site))
    assert code == 0, err
    pages = [p.read_text() for p in site.rglob("*.html")]
    assert any("my_rubric" in page for page in pages)
    assert not any("not registered in this installation" in page for page in pages)


def test_registered_judged_example_runs_and_reruns_from_the_cache(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.sqlite"
    args = ["run", *tiny(tiny_model_dir), "--store", str(store), "--limit", "2"]
    first = run_json(capsys, *args, "--tasks", "example_rubric")
    assert first["calls_made"]["model"] == 2 and first["calls_made"]["judge"] == 20
    again = run_json(capsys, *args, "--tasks", "example_rubric")
    assert again["calls_made"] == {"model": 0, "judge": 0}


def test_rule_scored_generation_needs_no_judge(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    rows = [{"word": w} for w in ("alpha", "beta", "gamma")]
    (folder / "rows.csv").write_text("word\n" + "\n".join(r["word"] for r in rows) + "\n")
    (folder / "task.yaml").write_text(
        "name: echo\noutput_type: generate\ndata: rows.csv\nprompt: 'Say {{ word }}'\n"
        "target: word\nmax_new_tokens: 4\nscoring:\n  regex: '(\\w+)'\n  ignore_case: true\n"
    )
    result = run_json(capsys, "run", *tiny(tiny_model_dir), "--tasks", str(folder))
    entry = result["tasks"]["echo"]
    assert result["calls_made"] == {"model": 3, "judge": 0} and result["judge"] is None
    assert (
        0.0 <= entry["metrics"]["exact_match"] <= 1.0 and entry["counts"]["scored_exact_match"] == 3
    )


def write_task(tmp_path: Path, yaml_text: str, data: str | None = '{"q": "x", "a": "y"}\n') -> Path:
    folder = tmp_path / "bad_task"
    folder.mkdir(exist_ok=True)
    (folder / "task.yaml").write_text(yaml_text)
    if data is not None:
        (folder / "data.jsonl").write_text(data)
    return folder


GOOD = (
    "name: bad_task\n"
    "data: data.jsonl\n"
    "output_type: generate\n"
    "prompt: 'Q: {{ q }}'\n"
    "target: a\n"
    "scoring: exact_match\n"
)


def bad(name: str, yaml_text: str, expect: str) -> Any:
    return pytest.param(yaml_text, expect, id=name)


MC = "name: bad_task\ndata: data.jsonl\noutput_type: multiple_choice\nprompt: '{{ q }}'\n"
MALFORMED = [
    bad("missing-field", GOOD.replace("prompt: 'Q: {{ q }}'\n", ""),
        "task.yaml: missing field 'prompt'"),
    bad("unknown-output-type", GOOD.replace("output_type: generate", "output_type: ranking"),
        "task.yaml:3: field 'output_type': unknown output_type 'ranking'"),
    bad("bad-jinja", GOOD.replace("{{ q }}", "{{ q }"),
        "task.yaml:4: field 'prompt': invalid template"),
    bad("undefined-field", GOOD.replace("{{ q }}", "{{ question }}"),
        "task.yaml:4: field 'prompt': 'question' is undefined (rendering row"),
    bad("data-file-missing", GOOD.replace("data.jsonl", "missing.jsonl"),
        "task.yaml:2: field 'data.path':"),
    bad("wrong-metric", GOOD + "metrics: [acc]\n",
        "task.yaml:7: field 'metrics[0]': 'acc' is not a metric of exact_match scoring"),
    bad("unknown-field", GOOD.replace("target: a", "targte: a"),
        "task.yaml:5: field 'targte': unknown field; did you mean 'target'?"),
    bad("rating-without-rubric", GOOD.replace("scoring: exact_match", "scoring:\n  judge: rating"),
        "task.yaml:6: missing field 'scoring.rubric'"),
    bad("target-not-a-choice", MC + "choices: ['y', 'n']\ntarget: '{{ a }}z'\n",
        "task.yaml:6: field 'target': 'yz' is not one of the choices (row"),
]  # fmt: skip


@pytest.mark.parametrize(("yaml_text", "expect"), MALFORMED)
def test_malformed_task_yaml_is_one_line_naming_file_line_and_field(
    yaml_text: str,
    expect: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = write_task(tmp_path, yaml_text)
    code, out, err = run_cli(capsys, "run", *tiny(tiny_model_dir), "--tasks", str(folder))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("evalharness: error: "), err
    assert lines[0].startswith(f"evalharness: error: {folder}/{expect}"), lines[0]


def test_a_folder_without_task_yaml_and_a_builtin_name_are_refused(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "run", *tiny(tiny_model_dir), "--tasks", str(empty))
    assert code == 2 and f"--tasks {empty}: no task.yaml in this folder" in err
    folder = write_task(tmp_path, GOOD.replace("name: bad_task", "name: mt_bench"))
    code, _, err = run_cli(capsys, "run", *tiny(tiny_model_dir), "--tasks", str(folder))
    assert code == 2 and "task.yaml:1: field 'name': 'mt_bench' is a built-in task" in err


def test_data_hash_follows_the_yaml_and_the_data(tmp_path: Path) -> None:
    from evalharness.tasks.registry import get_task_class

    folder = write_task(tmp_path, GOOD)
    first = get_task_class(str(folder))({}).load().data_hash
    (folder / "data.jsonl").write_text('{"q": "x", "a": "z"}\n')
    second = get_task_class(str(folder))({}).load().data_hash
    (folder / "task.yaml").write_text(GOOD.replace("Q:", "Question:"))
    third = get_task_class(str(folder))({}).load().data_hash
    assert len({first, second, third}) == 3


def test_acc_norm_divides_by_the_choice_length_without_the_delimiter() -> None:
    """lm-eval's acc_norm: logprob / len(choice), the delimiter not counted. With choices "a"
    and "bbb" at -2.0 and -5.5 that picks "bbb" (-2.0 vs -1.83); counting the delimiter would
    pick "a" (-1.0 vs -1.375), and plain acc picks "a" too."""
    from evalharness.engine.requests import ScoreResult
    from evalharness.tasks.base import Sample
    from evalharness.tasks.registry import get_task_class

    task = get_task_class("example_mc")({})
    sample = Sample("s", {"prompt": "Q:", "choices": ["a", "bbb"], "gold": 1})
    responses = {
        "choice_0": ScoreResult(logprob=-2.0, n_tokens=1, is_greedy=False),
        "choice_1": ScoreResult(logprob=-5.5, n_tokens=3, is_greedy=False),
    }
    scores = task.score(sample, responses, {})
    assert (scores["pred"], scores["pred_norm"]) == (0, 1)
    assert (scores["acc"], scores["acc_norm"]) == (0.0, 1.0)


def lm_eval_reference(data: Path, **config: Any) -> Any:
    """lm-eval's own `ConfigurableTask` over the same JSONL (no model): the reference for how
    a YAML's fields turn a row into a prompt and a gold index."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.task import ConfigurableTask

    return ConfigurableTask(
        config={
            "task": "reference",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "output_type": "multiple_choice",
            **config,
        }
    )


@pytest.fixture
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets_config = pytest.importorskip("datasets.config")
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


DIGIT_ROWS = [
    {"q": "How many wheels does a bicycle have?", "choices": ["2", "4", "3", "1"], "answer": "2"},
    {"q": "How many legs does a spider have?", "choices": ["6", "8", "0", "1"], "answer": "1"},
    {"q": "How many days in a week?", "choices": ["5", "7", "1", "9"], "answer": "1"},
]


@pytest.mark.parametrize(
    ("target", "lm_eval_target", "as_int", "expected"),
    [
        pytest.param("answer", "answer", False, [0, 3, 2], id="field-text"),
        pytest.param("'{{ answer }}'", "{{answer}}", False, [2, 1, 1], id="template"),
        pytest.param("answer", "answer", True, [2, 1, 1], id="field-int"),
    ],
)
def test_digit_text_target_is_the_choice_text_as_in_lm_eval(
    target: str,
    lm_eval_target: str,
    as_int: bool,
    expected: list[int],
    tmp_path: Path,
    datasets_cache: None,
) -> None:
    """A field holding "2" names the choice "2" (index 0 in the first row), not index 2; a
    field holding an int is an index, and so is a template rendering digits. The gold indices
    equal lm-eval's on the same rows."""
    from evalharness.tasks.registry import get_task_class

    folder = tmp_path / "digits"
    folder.mkdir()
    data = folder / "data.jsonl"
    rows = [
        {**row, "answer": int(row["answer"]) if as_int else row["answer"]} for row in DIGIT_ROWS
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "task.yaml").write_text(
        f"name: digits\ndata: data.jsonl\noutput_type: multiple_choice\nprompt: '{{{{ q }}}}'\n"
        f"choices: choices\ntarget: {target}\n"
    )
    ours = [s.data["gold"] for s in get_task_class(str(folder))({}).load().samples]
    reference = lm_eval_reference(
        data, doc_to_text="{{q}}", doc_to_choice="choices", doc_to_target=lm_eval_target
    )
    theirs = []
    for doc in reference.test_docs():
        gold = reference.doc_to_target(doc)
        theirs.append(gold if isinstance(gold, int) else doc["choices"].index(gold))
    assert ours == theirs == expected


PROMPT_ROWS = [
    {"question": "What is frozen water called?", "topic": "Physics", "choices": ["ice", "fog"]},
    {"question": "Which planet is closest to the Sun?", "topic": "Space", "choices": ["Mars", "x"]},
]


@pytest.mark.parametrize(
    ("fields", "lm_eval_fields"),
    [
        pytest.param(
            {"description": '"Answer the question.\\n\\n"', "prompt": '"Q: {{ question }}\\nA:"'},
            {"description": "Answer the question.\n\n", "doc_to_text": "Q: {{question}}\nA:"},
            id="description",
        ),
        pytest.param(
            {"description": "'About {{ topic }}: '", "prompt": "question"},
            {"description": "About {{topic}}: ", "doc_to_text": "question"},
            id="bare-field-prompt",
        ),
    ],
)
def test_description_and_bare_field_prompt_render_as_in_lm_eval(
    fields: dict[str, str], lm_eval_fields: dict[str, str], tmp_path: Path, datasets_cache: None
) -> None:
    """`description` goes before the prompt (it was ignored) and a prompt that is exactly a
    field's name is that field's value (it was the literal name): the prompts equal the
    contexts lm-eval builds from the same fields."""
    from evalharness.tasks.registry import get_task_class

    folder = tmp_path / "prompts"
    folder.mkdir()
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in PROMPT_ROWS))
    extra = "".join(f"{key}: {value}\n" for key, value in fields.items())
    (folder / "task.yaml").write_text(
        "name: prompts\ndata: data.jsonl\noutput_type: multiple_choice\nchoices: choices\n"
        f"target: 0\n{extra}"
    )
    ours = [s.data["prompt"] for s in get_task_class(str(folder))({}).load().samples]
    reference = lm_eval_reference(data, doc_to_choice="choices", doc_to_target=0, **lm_eval_fields)
    theirs = [reference.fewshot_context(doc, num_fewshot=0) for doc in reference.test_docs()]
    assert ours == theirs
