"""`evalharness pipeline` with `rounds:`: self-rewarding / iterative DPO, round after round.

The rounds run on the tiny chat model. Its answers are noise, so most tests judge them with a
rule (`regex:[0-9]`: an answer with a digit is worth 1, one without 0), whose ratings the tests
recompute with Python's `re` to check every pair; `self` judging runs once, checked against the
same model loaded as a separate LLM judge.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_cli

from evalharness.engine import pipeline, self_rewarding, training
from evalharness.reports.names import Names
from evalharness.store.run_store import RunStore

# Tiny-model training: one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "What is the capital of France?",
    "Explain why the river is long.",
    "Write a number.",
    "Say something helpful.",
]
DIGIT = "[0-9]"
SAMPLES = 3


def _config(model: Path, tmp_path: Path, out: str, **rounds: Any) -> dict[str, Any]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return {
        "train": {
            "method": "dpo",
            "model": f"hf:{model}",
            "out": str(tmp_path / out),
            "max_steps": 1,
            "batch_size": 2,
            "learning_rate": 1e-3,
        },
        "evaluate": {
            "tasks": ["driftcaps"],
            "limit": 4,
            "task_args": {"driftcaps.max_new_tokens": 8},
            "store": str(tmp_path / "store.sqlite"),
        },
        "gate": [{"metric": "driftcaps.balanced_safety_accuracy", "max_drop": 100.0}],
        "rounds": {
            "count": 2,
            "prompts": str(prompts),
            "samples": SAMPLES,
            "judge": f"regex:{DIGIT}",
            "max_new_tokens": 10,
            **rounds,
        },
    }


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected_pairs(generations: list[dict[str, Any]]) -> tuple[list[tuple[int, str, str]], int]:
    """(prompt index, chosen text, rejected text) per prompt with a digit in some answers but
    not all, the first answer of each kind; and how many prompts tied."""
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for row in generations:
        by_prompt.setdefault(row["prompt_index"], []).append(row)
    pairs, ties = [], 0
    for index, rows in sorted(by_prompt.items()):
        rows = sorted(rows, key=lambda r: r["sample"])
        with_digit = [r["text"] for r in rows if re.search(DIGIT, r["text"])]
        without = [r["text"] for r in rows if not re.search(DIGIT, r["text"])]
        if with_digit and without:
            pairs.append((index, with_digit[0], without[0]))
        else:
            ties += 1
    return pairs, ties


def _check_round_files(folder: Path) -> dict[str, int]:
    """The judged answers and the pairs of one round, against ratings recomputed here."""
    generations = _rows(folder / "generations.jsonl")
    assert len(generations) == len(PROMPTS) * SAMPLES
    assert [r["seed"] for r in generations[:SAMPLES]] == list(range(SAMPLES))
    judged = _rows(folder / "judged.jsonl")
    assert [r["text"] for r in judged] == [r["text"] for r in generations]
    assert [r["rating"] for r in judged] == [
        1.0 if re.search(DIGIT, r["text"]) else 0.0 for r in generations
    ]
    expected, ties = _expected_pairs(generations)
    pairs = _rows(folder / "pairs.jsonl")
    found = [
        (p["prompt_index"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
    ]
    assert found == expected and expected
    assert all(
        p["prompt"] == [{"role": "user", "content": PROMPTS[p["prompt_index"]]}] for p in pairs
    )
    counts = json.loads((folder / "pairs.json").read_text())
    assert counts == {
        "prompts": len(PROMPTS),
        "pairs": len(expected),
        "ties": ties,
        "unrated": 0,
        "unrated_answers": 0,
    }
    return counts


def test_two_rounds_resume_after_an_interruption_and_land_in_the_store(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _config(tiny_model_dir, tmp_path, "out")
    path = _write(tmp_path / "rounds.yaml", config)
    out = tmp_path / "out"
    calls = {"train": 0, "generate": 0}
    real_train, real_generate = training.run_training, self_rewarding.generate_samples

    def train(method: Any, config: Any, *, progress: bool = True) -> Any:
        calls["train"] += 1
        if calls["train"] == 2:
            raise RuntimeError("simulated interruption in round 2's training")
        return real_train(method, config, progress=progress)

    def generate(*args: Any) -> list[dict[str, Any]]:
        calls["generate"] += 1
        return real_generate(*args)

    monkeypatch.setattr(training, "run_training", train)
    monkeypatch.setattr(self_rewarding, "generate_samples", generate)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        pipeline.run_pipeline(path, progress=False)
    assert calls == {"train": 2, "generate": 2}
    assert (out / "round-1" / "round.json").exists()
    assert (out / "round-2" / "pairs.jsonl").exists() and not (
        out / "round-2" / "trained.json"
    ).exists()
    done = [f for f in sorted(out.rglob("*")) if f.is_file()]
    stamps = {f: f.stat().st_mtime_ns for f in done}

    # The rerun resumes at round 2's training: nothing before it is sampled, judged or trained.
    calls.update(train=0, generate=0)
    code, stdout, err = run_cli(capsys, "pipeline", str(path), "--json", "--quiet")
    assert code == 0, err
    assert calls == {"train": 1, "generate": 0}
    assert {f: f.stat().st_mtime_ns for f in done if f.name != "round.json"} == {
        f: s for f, s in stamps.items() if f.name != "round.json"
    }
    report = json.loads(stdout)
    first, second = report["rounds"]
    assert report["passed"] is True and report["stopped"] is None
    assert first["start_model"] == f"hf:{tiny_model_dir}"
    assert second["start_model"] == first["model"] == f"hf:{(out / 'round-1' / 'model').resolve()}"
    assert report["final_model"] == second["model"]
    assert [c["against"] for c in first["gates"]] == ["base"]
    assert [c["against"] for c in second["gates"]] == ["round 1", "base"]
    for entry in report["rounds"]:
        assert entry["pairs"] == _check_round_files(Path(entry["folder"]))
        assert entry["trained"]["steps"] == 1
        trained = json.loads((Path(entry["folder"]) / "model" / "train.json").read_text())
        assert trained["config"]["data"] == str(Path(entry["folder"]) / "pairs.jsonl")
        # Trained from the round's start model, which is its reference (the default one).
        assert trained["config"]["model"] == entry["start_model"]
        assert trained["config"]["reference"] is None

    monkeypatch.undo()

    # Every evaluation is a stored run whose model names its round; compare reads them.
    store = tmp_path / "store.sqlite"
    run_store = RunStore(store)
    models = {run["run_id"]: run["model"] for run in run_store.list_runs()}
    run_store.close()
    assert models == {
        report["base_run"]: f"hf:{tiny_model_dir}",
        first["run"]: f"hf:{out.resolve()}/round-1/model",
        second["run"]: f"hf:{out.resolve()}/round-2/model",
    }
    code, stdout, err = run_cli(
        capsys, "compare", first["run"], second["run"], "--store", str(store)
    )
    assert code == 0, err
    code, _, err = run_cli(capsys, "report", "--store", str(store), "--out", str(tmp_path / "site"))
    assert code == 0, err
    for run_id in models:
        assert (tmp_path / "site" / Names.run_page(run_id)).is_file()
    # The count is not part of what the rounds' files depend on: one round reuses the first.
    code, stdout, err = run_cli(
        capsys,
        "pipeline",
        str(_write(path, {**config, "rounds": {**config["rounds"], "count": 1}})),
        "--json",
        "--quiet",
    )
    assert code == 0, err
    assert [r["run"] for r in json.loads(stdout)["rounds"]] == [first["run"]]

    # Another rounds config on the same folder is refused, leaving the finished rounds alone.
    changed = _config(tiny_model_dir, tmp_path, "out", samples=SAMPLES + 1)
    code, _, err = run_cli(capsys, "pipeline", str(_write(path, changed)), "--quiet")
    assert code == 2 and err.count("\n") == 1 and "holds rounds made by another" in err
    # So is another dtype to sample in (the model spec's dtype comes from evaluate:).
    other_dtype = {**config, "evaluate": {**config["evaluate"], "dtype": "float16"}}
    code, _, err = run_cli(capsys, "pipeline", str(_write(path, other_dtype)), "--quiet")
    assert code == 2 and err.count("\n") == 1 and "holds rounds made by another" in err

    # The gate is read again on every attempt (it is not part of what the rounds' files depend
    # on): a stricter one fails round 1's stored run, and the loop stops there, leaving round 2.
    round_2 = {f: f.stat().st_mtime_ns for f in (out / "round-2").rglob("*") if f.is_file()}
    failing = {**config, "gate": [{**config["gate"][0], "max_drop": -100.0}]}
    code, stdout, err = run_cli(capsys, "pipeline", str(_write(path, failing)))
    assert code == 1, err
    assert (
        "round 1: " in stdout and "  FAIL  driftcaps.balanced_safety_accuracy (vs base)" in stdout
    )
    assert (
        "stopped: round 1 failed its gate: driftcaps.balanced_safety_accuracy (vs base)" in stdout
    )
    assert f"final model: hf:{tiny_model_dir}" in stdout and "round 2" not in stdout
    gated = json.loads((out / "round-1" / "round.json").read_text())
    assert gated["passed"] is False and [c["against"] for c in gated["gates"]] == ["base"]
    assert gated["run"] == first["run"]
    assert {f: f.stat().st_mtime_ns for f in round_2} == round_2

    # A round's answers are seeded: sampling the base model again gives round 1's answers.
    from evalharness.backends import load_backend
    from evalharness.backends.spec import parse_model_spec
    from evalharness.formats.records import YamlLines

    backend = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    try:
        again = self_rewarding.generate_samples(
            backend, PROMPTS, self_rewarding.read_rounds(config["rounds"], YamlLines(path)).sampling
        )
    finally:
        backend.close()
    assert json.loads(json.dumps(again)) == _rows(out / "round-1" / "generations.jsonl")


def test_self_judging_rates_with_the_current_model(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`judge: self`: the round's own model rates its answers (MT-Bench's 1-10 prompt, read
    from its probabilities), the same ratings as that model loaded as a separate judge."""
    from evalharness.backends.best_of_n import rating_fields
    from evalharness.engine.requests import Message
    from evalharness.judges.factory import build_judge
    from evalharness.tasks.base import JudgeItem

    config = _config(tiny_model_dir, tmp_path, "out", count=1, samples=2, judge="self", limit=2)
    path = _write(tmp_path / "self.yaml", config)
    code, stdout, err = run_cli(capsys, "pipeline", str(path), "--json", "--quiet")
    assert code == 0, err
    folder = tmp_path / "out" / "round-1"
    judged = _rows(folder / "judged.jsonl")
    assert sorted({row["prompt"] for row in judged}) == sorted(PROMPTS[:2])  # rounds.limit
    judge = build_judge(f"hf:{tiny_model_dir}")
    items = [
        JudgeItem(
            "rating", "mt_bench_single", rating_fields((Message("user", r["prompt"]),), r["text"])
        )
        for r in judged
    ]
    requests = [judge.requests_for(item) for item in items]
    results = iter(judge.backend.answer([r for group in requests for r in group]))
    for row, item, group in zip(judged, items, requests, strict=True):
        verdict = judge.verdict(item, [next(results) for _ in group])
        assert 1.0 <= row["rating"] <= 10.0
        assert row["rating"] == pytest.approx(verdict["rating"], abs=1e-5)
    by_prompt: dict[int, list[float]] = {}
    for row in judged:
        by_prompt.setdefault(row["prompt_index"], []).append(row["rating"])
    pairs = _rows(folder / "pairs.jsonl")
    assert len(pairs) == sum(1 for r in by_prompt.values() if max(r) != min(r))
    for pair in pairs:
        ratings = by_prompt[pair["prompt_index"]]
        assert (pair["chosen_rating"], pair["rejected_rating"]) == (max(ratings), min(ratings))
    assert json.loads(stdout)["rounds"][0]["pairs"]["pairs"] == len(pairs)


def test_pairs_skip_ties_and_unrated_prompts_and_count_them() -> None:
    from evalharness.engine.round_steps import build_pairs

    def answer(prompt: int, sample: int, rating: float | None) -> dict[str, Any]:
        return {
            "prompt_index": prompt,
            "sample": sample,
            "prompt": f"q{prompt}",
            "text": f"{prompt}/{sample}",
            "rating": rating,
        }

    judged = [
        answer(0, 0, 3.0), answer(0, 1, None), answer(0, 2, 3.0),  # a tie
        answer(1, 0, None), answer(1, 1, 5.0),  # one rating only
        answer(2, 0, 2.0), answer(2, 1, 7.0), answer(2, 2, 7.0), answer(2, 3, 2.0),
    ]  # fmt: skip
    pairs, counts = build_pairs(judged)
    assert counts == {"prompts": 3, "pairs": 1, "ties": 1, "unrated": 1, "unrated_answers": 2}
    (pair,) = pairs
    assert pair["chosen"] == [{"role": "assistant", "content": "2/1"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "2/0"}]
    assert pair["prompt"] == [{"role": "user", "content": "q2"}]


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        ({"rounds": {"sampels": 4}}, 4, "unknown key rounds.sampels; known: count, prompts"),
        ({"rounds": {"count": 0}}, 4, "field 'rounds.count' must be at least 1, not 0"),
        (
            {"rounds": {"samples": "four"}},
            4,
            "field 'rounds.samples' must be a whole number, not 'four'",
        ),
        ({"rounds": {"temperature": 0}}, 4, "field 'rounds.temperature' must be above 0"),
        ({"rounds": {"judge": "refusal-rules"}}, 4, "rounds.label_ratings must rate full_refusal"),
        (
            {"rounds": {"label_ratings": {"match": "high", "no_match": 0}}},
            4,
            "field 'rounds.label_ratings.match' must be a number, not 'high'",
        ),
        ({"rounds": {"limit": None, "samples": 1}}, 4, "field 'rounds.samples' must be at least 2"),
        (
            {"rounds": {"prompts": "missing.jsonl"}},
            4,
            "'rounds.prompts': missing.jsonl: no such file",
        ),
        ({"rounds": {"judge": "clf:x"}}, 4, "clf: judges cannot rate answers"),
        ({"rounds": {"judge": "slef"}}, 4, "field 'rounds.judge': unknown model spec 'slef'"),
        ({"rounds": {"judge_mode": "logits"}}, 4, "field 'rounds.judge_mode' must be one of"),
        ({"train": {"data": "x.jsonl"}}, 1, "field 'train.data': with rounds, each round's pairs"),
        ({"train": {"method": "sft"}}, 1, "rounds train on preference pairs, and sft takes sft"),
    ],
)
def test_bad_rounds_settings_are_one_line_errors_naming_the_line(
    edit: dict[str, dict[str, Any]],
    line: int,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path / "no-model", tmp_path, "out")
    for section, values in edit.items():
        config[section].update(values)
    path = tmp_path / "rounds.yaml"
    path.write_text(
        "".join(
            f"{key}: {json.dumps(config[key])}\n" for key in ("train", "evaluate", "gate", "rounds")
        )
    )
    code, _, err = run_cli(capsys, "pipeline", str(path), "--quiet")
    assert code == 2
    (error,) = err.strip().splitlines()
    assert error.endswith(message) or message in error, error
    assert f"{path}:{line}:" in error
    assert not (tmp_path / "out").exists()


def test_a_resumed_round_that_only_judges_loads_no_policy(tmp_path: Path) -> None:
    """With a judge that is not the model itself (here a rule), the policy is loaded only to
    sample: a round resumed after its sampling judges the stored answers without it (the
    model directory here does not even exist)."""
    from evalharness.engine.pipeline import read_pipeline

    model = tmp_path / "no-model"
    path = _write(tmp_path / "rounds.yaml", _config(model, tmp_path, "out", count=1))
    rounds = self_rewarding.Rounds(path, *read_pipeline(path), progress=False)
    folder = tmp_path / "out" / "round-1"
    texts = ["it is 42", "no digits", "one", "7 rivers"]
    folder.mkdir()
    (folder / "generations.jsonl").write_text(
        "".join(
            json.dumps(
                {"prompt_index": i // 2, "sample": i % 2, "prompt": PROMPTS[i // 2], "text": t}
            )
            + "\n"
            for i, t in enumerate(texts)
        )
    )
    rounds.sample_and_judge(f"hf:{model}", folder)
    judged = _rows(folder / "judged.jsonl")
    assert [row["rating"] for row in judged] == [1.0, 0.0, 0.0, 1.0]
    assert not model.exists()


def test_reward_model_ratings_pick_the_pairs(tmp_path: Path) -> None:
    """`judge: rm:DIR`: each answer's rating is the reward model's output on the dialogue
    (computed here with transformers directly), and the pair is its best and worst answer."""
    import torch
    from tiny_models import build_tiny_reward_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from evalharness.engine.round_steps import RatingJudge, build_pairs
    from evalharness.judges.factory import build_judge

    reward_dir = build_tiny_reward_model(tmp_path / "rm")
    answers = ["Paris is the capital.", "I like rivers", "42", "the a of and to"]
    rows = [
        {"prompt_index": 0, "sample": i, "prompt": PROMPTS[0], "text": text}
        for i, text in enumerate(answers)
    ]
    judged = RatingJudge(build_judge(f"rm:{reward_dir}"), None).judge_rows(rows)
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    rewards = []
    for text in answers:
        dialogue = [{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": text}]
        rendered = tokenizer.apply_chat_template(dialogue, tokenize=False)
        ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            rewards.append(model(**ids).logits[0, 0].item())
    assert [row["rating"] for row in judged] == pytest.approx(rewards, abs=1e-4)
    (pair,), counts = build_pairs(judged)
    assert pair["chosen"][0]["content"] == answers[rewards.index(max(rewards))]
    assert pair["rejected"][0]["content"] == answers[rewards.index(min(rewards))]
    assert counts["ties"] == counts["unrated"] == 0


def test_unparseable_text_ratings_are_asked_again_then_left_unrated() -> None:
    """A text-mode LLM judge whose answer has no [[rating]] is asked again (sampled, attempt
    1, 2, ...) up to its retries; still none leaves the answer unrated, and a prompt with
    fewer than two rated answers gives no pair."""
    from evalharness.backends.base import Backend
    from evalharness.engine.requests import GenerateResult
    from evalharness.engine.round_steps import RatingJudge, build_pairs
    from evalharness.judges.llm import LLMJudge

    class Scripted(Backend):
        """Answers each judge prompt from a script keyed by the judged answer's text."""

        identity = {"name": "scripted"}  # type: ignore[assignment]

        def __init__(self, script: dict[str, list[str]]) -> None:
            self.script = script
            self.seen: list[tuple[str, int]] = []

        def generate(self, requests: Any) -> list[GenerateResult]:
            results = []
            for request in requests:
                answer = next(a for a in self.script if a in request.messages[-1].content)
                self.seen.append((answer, request.sampling.seed))
                results.append(GenerateResult(self.script[answer].pop(0)))
            return results

        def score(self, requests: Any) -> list[Any]:
            raise AssertionError("text mode does not score")

    script = {
        "alpha": ["Rating: [[8]]"],
        "beta": ["no verdict here", "Rating: [[3]]"],
        "gamma": ["nothing", "still nothing", "no"],
        "delta": ["Rating: [[5]]"],
    }
    backend = Scripted(script)
    judge = LLMJudge(backend, mode="text", name="scripted", retries=2)
    rows = [
        {"prompt_index": p, "sample": s, "prompt": f"question {p}", "text": text}
        for p, s, text in [(0, 0, "alpha"), (0, 1, "beta"), (1, 0, "gamma"), (1, 1, "delta")]
    ]
    judged = RatingJudge(judge, None).judge_rows(rows)
    assert [row["rating"] for row in judged] == [8.0, 3.0, None, 5.0]
    assert sorted(backend.seen) == sorted(
        [
            ("alpha", 0),
            ("beta", 0),
            ("gamma", 0),
            ("delta", 0),
            ("beta", 1),
            ("gamma", 1),
            ("gamma", 2),
        ]
    )
    pairs, counts = build_pairs(judged)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("alpha", "beta")
    ]
    assert counts == {"prompts": 2, "pairs": 1, "ties": 0, "unrated": 1, "unrated_answers": 1}


def test_an_openai_judge_rates_through_its_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`judge_base_url` points an `openai:` rounds judge at its endpoint (here the scripted judge
    server on 127.0.0.1): each answer's rating is the server's rule applied to the MT-Bench
    single-answer prompt of that question and answer."""
    from evalharness.engine.pipeline import read_pipeline
    from evalharness.testing.judge_server import running_judge_server
    from evalharness.testing.scripted_judge import scripted_rating

    texts = ["Paris.", "It is Paris, in France.", "The river is long.", "Rain."]
    monkeypatch.setenv("SCRIPTED_JUDGE_KEY", "not-a-real-key")
    with running_judge_server() as url:
        config = _config(
            tmp_path / "no-model", tmp_path, "out", count=1, judge="openai:scripted",
            judge_base_url=url, judge_api_key_env="SCRIPTED_JUDGE_KEY",
        )  # fmt: skip
        path = _write(tmp_path / "rounds.yaml", config)
        rounds = self_rewarding.Rounds(path, *read_pipeline(path), progress=False)
        folder = tmp_path / "out" / "round-1"
        folder.mkdir(parents=True)
        (folder / "generations.jsonl").write_text(
            "".join(
                json.dumps(
                    {"prompt_index": i // 2, "sample": i % 2, "prompt": PROMPTS[i // 2], "text": t}
                )
                + "\n"
                for i, t in enumerate(texts)
            )
        )
        rounds.sample_and_judge(f"hf:{tmp_path / 'no-model'}", folder)
    expected = [
        scripted_rating(f"[Question]\n{PROMPTS[i // 2]}\n\n[The Assistant's Answer]\n{t}")
        for i, t in enumerate(texts)
    ]
    assert [row["rating"] for row in _rows(folder / "judged.jsonl")] == expected
