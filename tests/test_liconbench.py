"""LongICLBench (`liconbench`): parsing and rule scoring on crafted completions, round-robin and
grouped demonstration order, the exact prompt, token budgets, loaders on real shared data, one-line
input errors, and an end-to-end run on the tiny model producing a per-round curve."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_json, task_run_args
from conftest import shared_data
from scipy.stats import binomtest

from evalharness.engine.requests import CompleteRequest, GenerateResult
from evalharness.errors import InputError
from evalharness.tasks.base import Sample
from evalharness.tasks.liconbench import synthetic
from evalharness.tasks.liconbench.loader import BUILTIN
from evalharness.tasks.liconbench.scoring import (
    entity_counts,
    entity_micro_f1,
    judge_label,
    label_micro_f1,
    parse_entities,
)
from evalharness.tasks.liconbench.selection import (
    coverage_rounds,
    grouped,
    round_robin_order,
    round_robin_rounds,
)
from evalharness.tasks.liconbench.specs import approx_tokens
from evalharness.tasks.registry import get_task_class


def make_task(**options: str) -> Any:
    return get_task_class("liconbench")(options)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fake_scores(task: Any, samples: list[Sample], answer: Any) -> list[dict[str, Any]]:
    """Score every sample with completions from `answer(sample, point)`, as the engine would."""
    return [
        task.score(s, {p: GenerateResult(text=answer(s, p)) for p in task.points}, {})
        for s in samples
    ]


# -- parsing and scoring ---------------------------------------------------------------------
def test_label_parsing_is_exact_match_on_the_first_line_ignoring_case_and_spaces() -> None:
    labels = ["lights_on", "lights_off"]
    assert judge_label("  Lights_ON  \nintent: lights_off", "lights_on", labels).correct
    assert judge_label("lights_on", "LIGHTS_ON", labels).correct
    wrong = judge_label("lights_off", "lights_on", labels)
    assert (wrong.correct, wrong.valid) == (False, True)
    # Not the label: a near miss, a longer answer, an answer on the second line.
    for completion in ("lights on", "lights_on please", "\nlights_on"):
        outcome = judge_label(completion, "lights_on", labels)
        assert (outcome.correct, outcome.valid) == (False, False), completion
    assert judge_label("  Lights_ON  \n", "lights_on", labels).prediction == "Lights_ON"


def test_discovery_strips_quotes_commas_and_periods_other_datasets_do_not() -> None:
    labels = ["as_a_result,", "however", "[no-conn]"]
    for completion in ('"However."', "however,", "“however”", "as_a_result"):
        gold = "as_a_result," if completion.startswith("as_") else "however"
        assert judge_label(completion, gold, labels, strip_punctuation=True).correct, completion
        assert not judge_label(completion, gold, labels).correct, completion
    assert not judge_label("how ever", "however", labels, strip_punctuation=True).correct


def test_accuracy_curve_from_crafted_completions() -> None:
    task = make_task(rounds="1,2")
    samples = task.load(limit=4).samples
    golds = [s.data["item"]["label"] for s in samples]
    answers = {
        # round 1: 2 of 4 right (one by case/whitespace only); round 2: 3 of 4 right
        "round_1": [f" {golds[0].upper()} ", "set_alarm", golds[2], "no idea"],
        "round_2": [golds[0], golds[1] + "\nmore", golds[2], golds[0]],
    }
    by_id = {s.id: k for k, s in enumerate(samples)}
    scores = fake_scores(task, samples, lambda s, p: answers[p][by_id[s.id]])
    result = task.aggregate(samples, scores)
    # Hand-computed: round 1 = 2/4 (sample 1's gold is not set_alarm), round 2 = 3/4.
    assert golds[1] != "set_alarm" and golds[3] != golds[0]
    assert result.metrics["round_1"] == pytest.approx(0.5)
    assert result.metrics["round_2"] == pytest.approx(0.75)
    assert result.metrics["metric"] == "accuracy"
    assert result.counts["invalid_round_1"] == 1  # "no idea"
    assert result.counts["invalid_round_2"] == 0
    # Accuracy is a rate: scipy's Wilson interval over the 4 test items.
    wilson = binomtest(3, 4).proportion_ci(0.95, method="wilson")
    assert result.ci["round_2"] == pytest.approx((wilson.low, wilson.high))
    assert result.ci_method == {"round_1": "wilson", "round_2": "wilson"}


def test_relation_micro_f1_counts_only_valid_labels_in_precision(tmp_path: Path) -> None:
    assert label_micro_f1([]).f1 == 0.0
    # 5 gold items: 2 right, 1 wrong but a label, 2 answers that are no label at all.
    # P = 2/3, R = 2/5, F1 = 2PR/(P+R) = 0.5 exactly.
    outcomes = [(True, True), (True, True), (False, True), (False, False), (False, False)]
    result = label_micro_f1(outcomes)
    assert (result.precision, result.recall) == pytest.approx((2 / 3, 2 / 5))
    assert result.f1 == pytest.approx(0.5)

    # The same counts through the task, on a crafted TacRED-format directory.
    labels = ["per:title", "org:founded_by", "no_relation"]
    row = {"subject_entity": "Ann", "object_entity": "Acme"}
    train = [{**row, "sentence": f"Train {k}.", "relation": r} for k, r in enumerate(labels)]
    test = [
        {**row, "sentence": f"Test {k}.", "relation": labels[k % 3]} for k in range(5)
    ]  # gold: title, founded_by, no_relation, title, founded_by
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "test.jsonl", test)
    task = make_task(dataset="tacred", data=str(tmp_path), rounds="1")
    samples = task.load().samples
    answers = {
        "Test 0.": "per:title",  # right
        "Test 1.": "ORG:founded_by",  # right (case)
        "Test 2.": "per:title",  # wrong, valid -> false positive
        "Test 3.": "the title",  # no label: neither TP nor FP
        "Test 4.": "",  # no label
    }
    scores = fake_scores(task, samples, lambda s, p: answers[s.data["item"]["inputs"]["sentence"]])
    result = task.aggregate(samples, scores)
    metrics = result.metrics
    assert metrics["metric"] == "micro_f1"
    assert metrics["precision_round_1"] == pytest.approx(2 / 3)
    assert metrics["recall_round_1"] == pytest.approx(0.4)
    assert metrics["round_1"] == pytest.approx(0.5)
    # Micro-F1 has a bootstrap CI over test items (F1 recomputed from resampled counts).
    for name in ("round_1", "precision_round_1", "recall_round_1"):
        low, high = result.ci[name]
        assert 0.0 <= low <= metrics[name] <= high <= 1.0, name
    assert result.ci["round_1"][0] < 0.5 < result.ci["round_1"][1]
    assert task.aggregate(samples, scores).ci == result.ci  # seeded
    assert set(result.ci_method.values()) == {"bootstrap-percentile"}


def test_fewnerd_entity_f1_with_partial_and_wrong_type_matches() -> None:
    completion = (
        "Paris: location-GPE\n"
        "Eiffel: building-other\n"  # partial span: wrong
        "Gustave Eiffel: person-other\n"  # right span, wrong type
        "no colon here\n"  # not a prediction
        "Paris: person-other\n"  # repeated entity: the first type counts
        "\n"
        "sentence: A new example the parser must not read.\n"
        "Rome: location-GPE\n"
    )
    predicted = parse_entities(completion)
    assert predicted == {
        "Paris": "location-GPE",
        "Eiffel": "building-other",
        "Gustave Eiffel": "person-other",
    }
    gold = {
        "Paris": "location-GPE",
        "Eiffel Tower": "building-other",
        "Gustave Eiffel": "person-artist/author",
    }
    first = entity_counts(predicted, gold)
    assert (first.true_positives, first.n_predicted, first.n_gold) == (1, 3, 3)
    # Entity names may contain ": "; types compare case-insensitively; stop at "sentence:".
    second = entity_counts(
        parse_entities("Star Wars: Episode IV: ART-film\nSentence: next\nRome: location-GPE"),
        {"Star Wars: Episode IV": "art-film", "Rome": "location-GPE"},
    )
    assert (second.true_positives, second.n_predicted, second.n_gold) == (1, 1, 2)
    # Micro over both: TP 2, predicted 4, gold 5 -> P 1/2, R 2/5, F1 4/9.
    result = entity_micro_f1([first, second])
    assert (result.precision, result.recall) == pytest.approx((0.5, 0.4))
    assert result.f1 == pytest.approx(4 / 9)


# -- demonstration and test selection -------------------------------------------------------
def test_round_robin_follows_first_appearance_and_skips_exhausted_labels() -> None:
    labels = ["b", "a", "b", "c", "a", "b"]
    assert round_robin_rounds(labels) == [[0, 1, 3], [2, 4], [5]]
    assert round_robin_order(labels) == [0, 1, 3, 2, 4, 5]
    assert round_robin_order(labels, per_label=1) == [0, 1, 3]


def test_grouped_ablation_keeps_the_demonstrations_but_sorts_them_by_label() -> None:
    labels = ["b", "a", "b", "c", "a", "b"]
    assert grouped([0, 1, 3, 2, 4, 5], labels) == [0, 2, 5, 1, 4, 3]

    plain = make_task(rounds="2")
    ablation = make_task(rounds="2", order="grouped")
    plain.load(limit=1)
    ablation.load(limit=1)
    order = [r["label"] for r in synthetic.build_rows() if r["split"] == "train"]
    names = list(dict.fromkeys(order))

    def demo_labels(task: Any) -> list[str]:
        prefix = task.prefixes["round_2"]
        return [
            line[len("intent: ") :] for line in prefix.splitlines() if line.startswith("intent")
        ]

    assert demo_labels(plain) == names + names
    assert demo_labels(ablation) == [name for name in names for _ in range(2)]
    assert sorted(demo_labels(plain)) == sorted(demo_labels(ablation))


def test_test_items_are_label_balanced_and_ids_stable() -> None:
    first = make_task(rounds="1").load()
    labels = [s.data["item"]["label"] for s in first.samples]
    assert len(set(labels[:24])) == 24  # the first 24 of 72 cover every label once
    assert Counter(labels[:48]) == Counter({label: 2 for label in set(labels)})
    again = make_task(rounds="1,3").load(limit=10)
    assert [s.id for s in again.samples] == [s.id for s in first.samples[:10]]
    assert len({s.id for s in first.samples}) == len(first.samples)


def test_prompt_is_exact_for_a_two_label_toy(tmp_path: Path) -> None:
    rows = [
        {"split": "train", "text": "red apple", "label": "fruit"},
        {"split": "train", "text": "carrot", "label": "vegetable"},
        {"split": "train", "text": "green pear", "label": "fruit"},
        {"split": "train", "text": "leek", "label": "vegetable"},
        {"split": "test", "text": "plum", "label": "fruit"},
    ]
    task = make_task(data=str(write_jsonl(tmp_path / "toy.jsonl", rows)), rounds="1,2")
    data = task.load()
    requests = task.requests(data.samples[0], {})
    instruction = (
        "Given a request to a home assistant, please predict the intent of the request. "
        "The predicted answer must come from the demonstration examples with the exact format."
    )
    assert requests["round_1"].prompt == (
        f"{instruction}\n"
        "The examples are as follows:\n"
        "request: red apple\nintent: fruit\n"
        "request: carrot\nintent: vegetable\n"
        "request: plum\nintent:"
    )
    assert requests["round_2"].prompt == (
        f"{instruction}\n"
        "The examples are as follows:\n"
        "request: red apple\nintent: fruit\n"
        "request: carrot\nintent: vegetable\n"
        "request: green pear\nintent: fruit\n"
        "request: leek\nintent: vegetable\n"
        "request: plum\nintent:"
    )
    for request in requests.values():
        assert isinstance(request, CompleteRequest)
        assert request.sampling.greedy and request.sampling.max_new_tokens == 100
        assert request.stop == ("\n",)
    assert data.settings["n_demos"] == {"round_1": 2, "round_2": 4}
    prefix = requests["round_1"].prompt[: -len("request: plum\nintent:")]
    header = f"{instruction}\nThe examples are as follows:\n"
    demos = ("request: red apple\nintent: fruit\n", "request: carrot\nintent: vegetable\n")
    assert prefix == header + "".join(demos) == task.prefixes["round_1"]
    # ceil(chars / 4) per part: instruction + header, then each demonstration.
    expected = sum(math.ceil(len(part) / 4) for part in (header, *demos))
    assert data.settings["prompt_tokens"]["round_1"] == expected


def test_token_budget_adds_round_robin_demonstrations_while_the_prefix_fits() -> None:
    rounds = make_task(rounds="1,2")
    rounds.load(limit=1)
    budgets = (rounds.settings["prompt_tokens"]["round_1"], 600, 700)
    task = make_task(budget_tokens=",".join(str(b) for b in budgets))
    data = task.load(limit=1)
    assert task.points == [f"budget_{b}" for b in sorted(budgets)]
    n_demos, tokens = data.settings["n_demos"], data.settings["prompt_tokens"]
    # A budget equal to round 1's prefix length holds exactly round 1.
    assert task.prefixes[f"budget_{budgets[0]}"] == rounds.prefixes["round_1"]
    train = [r for r in synthetic.build_rows() if r["split"] == "train"]
    labels = list(dict.fromkeys(r["label"] for r in train))
    by_label = {label: [r for r in train if r["label"] == label] for label in labels}
    order = [by_label[label][k] for k in range(5) for label in labels]  # round-robin, by hand
    for budget in budgets:
        point = f"budget_{budget}"
        assert tokens[point] <= budget
        # The next round-robin demonstration would not have fitted.
        nxt = order[n_demos[point]]
        assert (
            tokens[point] + approx_tokens(f"request: {nxt['text']}\nintent: {nxt['label']}\n")
            > budget
        )
    assert n_demos[f"budget_{budgets[0]}"] < n_demos["budget_600"] < n_demos["budget_700"]


def test_fewnerd_rounds_cover_every_entity_type_r_times() -> None:
    types = [("a", "b"), ("a",), ("b", "c"), ("a", "c"), ("b",), ("c",)]
    # a, b, c seen 1x after 3 sentences, 2x after 4 (a 3, b 2, c 2), 3x after all 6.
    assert [coverage_rounds(types, r, "x") for r in (1, 2, 3)] == [3, 4, 6]
    with pytest.raises(InputError, match="every entity type 4 times, but 'a' occurs only 3"):
        coverage_rounds(types, 4, "x")


def test_synthetic_file_matches_its_generator() -> None:
    assert BUILTIN.read_text(encoding="utf-8") == synthetic.render()
    rows = synthetic.build_rows()
    per_label = Counter((r["label"], r["split"]) for r in rows)
    assert len({r["label"] for r in rows}) == 24
    assert set(per_label.values()) <= {5, 3}
    assert len({r["text"] for r in rows}) == len(rows)


# -- loaders on the real shared data --------------------------------------------------------
def test_banking77_loader_on_shared_data() -> None:
    directory = shared_data("banking77/train.csv").parent
    task = make_task(dataset="banking77", data=str(directory), rounds="1,2")
    data = task.load()
    categories = json.loads((directory / "categories.json").read_text())
    assert data.settings["n_labels"] == 77 == len(categories)
    assert set(task.label_set) == set(categories)
    assert data.settings["n_demos"] == {"round_1": 77, "round_2": 154}
    assert len(data.samples) == 77 * 7  # LongICLBench's 7 test items per label
    first = [s.data["item"]["label"] for s in data.samples[:77]]
    assert sorted(first) == sorted(categories)
    prompt = task.requests(data.samples[0], {})["round_1"].prompt
    assert prompt.count("\nintent category: ") == 77  # 77 demonstrations, then the cue
    assert prompt.endswith(f"service query: {data.samples[0].data['item']['inputs']['text']}\n"
                           "intent category:")  # fmt: skip


def test_fewnerd_loader_on_shared_data() -> None:
    directory = shared_data("longiclbench/fewnerd_train_10turns.json").parent
    task = make_task(dataset="fewnerd", data=str(directory), rounds="1-3")
    data = task.load(limit=5)
    tags = json.loads((directory / "id2fine_tags.json").read_text())
    assert data.settings["n_labels"] == 66 == len(tags)
    assert data.settings["n_demos"] == {"round_1": 57, "round_2": 114, "round_3": 170}
    assert data.settings["metric"] == "entity_f1"
    sample = data.samples[0]
    test = json.loads(next(directory.glob("fewnerd_test_1800*.json")).read_text())
    assert sample.data["item"]["entities"] == test[0]["entities"]
    prompt = task.requests(sample, {})["round_1"].prompt
    assert prompt.endswith(f"sentence: {test[0]['sentence']}\n")
    # Gold completions score 1.0 at every round; echoing nothing scores 0.
    gold = "".join(f"{e}: {t}\n" for e, t in test[0]["entities"].items())
    scores = fake_scores(task, data.samples[:1], lambda s, p: gold + "\nsentence: x")
    assert task.aggregate(data.samples[:1], scores).metrics["round_3"] == pytest.approx(1.0)
    # Entity F1 has a bootstrap CI over test sentences: gold answers for the first three of
    # five sentences, nothing for the rest (P = 1, R < 1).
    golds = {
        s.id: "".join(f"{e}: {t}\n" for e, t in s.data["item"]["entities"].items())
        for s in data.samples[:3]
    }
    scores = fake_scores(task, data.samples, lambda s, p: golds.get(s.id, ""))
    result = task.aggregate(data.samples, scores)
    assert result.metrics["precision_round_1"] == 1.0 and result.metrics["recall_round_1"] < 1
    for name in ("round_1", "recall_round_1"):
        low, high = result.ci[name]
        assert low < result.metrics[name] < high, name
    assert result.ci["precision_round_1"] == (1.0, 1.0)
    with pytest.raises(InputError, match="round 11 needs every entity type 11 times"):
        make_task(dataset="fewnerd", data=str(directory), rounds="11").load()


# -- input errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shots": "5"}, "unknown liconbench option 'shots'; known: dataset, data, rounds"),
        ({"dataset": "mnli"}, "liconbench.dataset 'mnli' is not one of synthetic"),
        ({"rounds": "0"}, "positive integers"),
        ({"rounds": "one"}, "expected integers"),
        ({"order": "shuffled"}, "liconbench.order 'shuffled'"),
        ({"dataset": "fewnerd", "order": "grouped"}, "needs a single-label dataset"),
        ({"rounds": "1", "budget_tokens": "100"}, "not both"),
        ({"max_new_tokens": "x"}, "must be an integer"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as error:
        make_task(**options)
    assert "\n" not in str(error.value)


def test_licensed_datasets_need_a_path_and_the_hub_fails_cleanly_offline() -> None:
    for name in ("tacred", "dialogre", "banking77", "fewnerd"):
        with pytest.raises(InputError, match=f"dataset={name} needs liconbench.data=DIR"):
            make_task(dataset=name).load()
    with pytest.raises(InputError, match="goemotions from the hub .* pass liconbench.data=DIR"):
        make_task(dataset="goemotions").load()
    with pytest.raises(InputError, match="round 6 asked, but the training data has only 5"):
        make_task(rounds="6").load()


def test_malformed_files_name_file_line_and_field(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"split": "train", "text": "a", "label": "x"}\n{"split": \n')
    with pytest.raises(InputError, match=rf"{bad_json}:2: invalid JSON"):
        make_task(data=str(bad_json)).load()
    missing = write_jsonl(
        tmp_path / "missing.jsonl",
        [{"split": "train", "text": "a", "label": "x"}, {"split": "test", "text": "b"}],
    )
    with pytest.raises(InputError, match=rf"{missing}:2: missing field 'label'"):
        make_task(data=str(missing)).load()
    split = write_jsonl(tmp_path / "split.jsonl", [{"split": "dev", "text": "a", "label": "x"}])
    with pytest.raises(InputError, match=rf"{split}:1: field 'split' must be 'train' or 'test'"):
        make_task(data=str(split)).load()

    banking = tmp_path / "banking"
    banking.mkdir()
    (banking / "train.csv").write_text("text,category\nhello,greet\nbye,\n")
    (banking / "test.csv").write_text("text,category\nhi,greet\n")
    with pytest.raises(
        InputError, match=r"train.csv:3: field 'category' must be a non-empty string"
    ):
        make_task(dataset="banking77", data=str(banking)).load()

    nerd = tmp_path / "nerd"
    nerd.mkdir()
    (nerd / "fewnerd_train_10turns.json").write_text(
        json.dumps([{"sentence": "Paris is big.", "entities": ["Paris"]}])
    )
    (nerd / "fewnerd_test_1800.json").write_text("[]")
    with pytest.raises(InputError, match=r"fewnerd_train_10turns.json\[0\]: field 'entities'"):
        make_task(dataset="fewnerd", data=str(nerd)).load()

    dialogre = tmp_path / "dialogre"
    dialogre.mkdir()
    write_jsonl(dialogre / "train.jsonl", [{"dialogue": "A: hi", "relations": [{"relation": "x"}]}])
    write_jsonl(dialogre / "test.jsonl", [])
    with pytest.raises(
        InputError, match=r"train.jsonl:1 relations\[0\]: missing field 'subject_entity'"
    ):
        make_task(dataset="dialogre", data=str(dialogre)).load()
    with pytest.raises(InputError, match=r"nerd: no train file \(looked for train_tacred.json"):
        make_task(dataset="tacred", data=str(nerd)).load()


def test_dialogre_expands_relations_into_pair_items(tmp_path: Path) -> None:
    relations = [
        {"relation": "per:friends", "subject_entity": "Speaker 1", "object_entity": "Speaker 2"},
        {"relation": "per:age", "subject_entity": "Speaker 1", "object_entity": "50"},
    ]
    write_jsonl(tmp_path / "train.jsonl", [{"dialogue": "Speaker 1: Hi!", "relations": relations}])
    flat = {**relations[1], "dialogue": "Speaker 2: I'm 50.\nSpeaker 1: No way."}
    write_jsonl(tmp_path / "test.jsonl", [flat])
    task = make_task(dataset="dialogre", data=str(tmp_path), rounds="1")
    data = task.load()
    assert data.settings["n_demos"] == {"round_1": 2}
    prompt = task.requests(data.samples[0], {})["round_1"].prompt
    assert prompt.endswith(
        "dialogue: Speaker 2: I'm 50.\nSpeaker 1: No way.\n"
        "the subject is Speaker 1 and the object is 50\n"
        "the relation between the two entities is:"
    )
    assert "the relation between the two entities is: per:friends\n" in prompt


def test_real_tokenizer_counts_when_given(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    task = make_task(budget_tokens="300", tokenizer=str(tiny_model_dir))
    data = task.load(limit=1)
    assert data.settings["token_count"] == f"tokenizer:{tiny_model_dir}"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    exact = len(tokenizer(task.prefixes["budget_300"], add_special_tokens=False)["input_ids"])
    assert data.settings["prompt_tokens"]["budget_300"] <= 300
    assert (
        abs(exact - data.settings["prompt_tokens"]["budget_300"])
        <= data.settings["n_demos"]["budget_300"]
    )
    with pytest.raises(InputError, match="cannot load a tokenizer"):
        make_task(budget_tokens="300", tokenizer=str(tiny_model_dir / "nope")).load()


# -- end to end ----------------------------------------------------------------------------
def test_end_to_end_curve_on_the_tiny_model(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoTokenizer

    store = tmp_path / "runs.sqlite"
    args = task_run_args(
        tiny_model_dir, store, "liconbench", "--limit", "4", dataset="synthetic", rounds="1,2"
    )
    first = run_json(capsys, *args)
    entry = first["tasks"]["liconbench"]
    metrics = entry["metrics"]
    assert entry["n"] == 4 and first["judge"] is None
    assert first["calls_made"]["model"] == 8  # 4 items x 2 rounds, no judge
    assert metrics["metric"] == "accuracy"
    for point in ("round_1", "round_2"):
        assert 0.0 <= metrics[point] <= 1.0
    assert metrics["n_demos_round_1"] == 24 and metrics["n_demos_round_2"] == 48
    assert metrics["prompt_tokens_round_2"] > metrics["prompt_tokens_round_1"] > 0
    # Raw completion, no chat template: the backend saw exactly BOS + the prompt's tokens.
    task = make_task(rounds="1,2")
    samples = task.load(limit=4).samples
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    requests = [task.requests(sample, {}) for sample in samples]
    for point in ("round_1", "round_2"):
        lengths = [len(tokenizer(r[point].prompt)["input_ids"]) for r in requests]
        assert metrics[f"model_prompt_tokens_{point}"] == pytest.approx(sum(lengths) / 4)

    again = run_json(capsys, *args)
    assert again["calls_made"]["model"] == 0
    assert again["tasks"]["liconbench"]["metrics"] == metrics


def test_goemotions_and_discovery_from_files(tmp_path: Path) -> None:
    emotions = tmp_path / "goemotions"
    emotions.mkdir()
    write_jsonl(
        emotions / "train.jsonl",
        [
            {"text": "Thanks a lot!", "labels": [15]},  # id 15 = gratitude
            {"text": "Wow, and ugh.", "labels": [26, 2]},  # two labels: skipped
            {"text": "So sad.", "label": "sadness"},
        ],
    )
    write_jsonl(emotions / "test.jsonl", [{"text": "Cheers!", "labels": ["gratitude"]}])
    task = make_task(dataset="goemotions", data=str(emotions), rounds="1")
    task.load()
    assert task.label_set == ["gratitude", "sadness"]
    assert task.prefixes["round_1"].endswith(
        "comment: Thanks a lot!\nemotion category: gratitude\n"
        "comment: So sad.\nemotion category: sadness\n"
    )

    discovery = tmp_path / "discovery"
    discovery.mkdir()
    row = {"sentence1": "It rained.", "sentence2": "we stayed in."}
    write_jsonl(discovery / "train.jsonl", [{**row, "label": "so,"}, {**row, "label": "however"}])
    write_jsonl(discovery / "test.jsonl", [{**row, "label": "so,"}])
    task = make_task(dataset="discovery", data=str(discovery), rounds="1")
    data = task.load()
    prompt = task.requests(data.samples[0], {})["round_1"].prompt
    assert prompt.endswith(
        "sentences: It rained. ( ) we stayed in.\n"
        "the most suitable conjunction word in the previous ( ) is:"
    )
    for answer, right in ((' "So."', 1.0), (" so", 1.0), (" however,", 0.0)):
        scores = fake_scores(task, data.samples, lambda s, p, a=answer: a)
        assert task.aggregate(data.samples, scores).metrics["round_1"] == right, answer
