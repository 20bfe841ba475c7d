"""Synthetic run stores for the report tests and benchmark, written straight through RunStore.

No model runs: each task's samples, scores, responses, verdicts and metrics are made up with
the shapes the real tasks store (checked against a store written by `evalharness run` on the
tiny test model), so the report reads them exactly as it reads real runs. Prompts are the same
for every run of a task (same sample ids and data hash, as with real reruns); answers and
scores vary with each run's `skill`.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalharness.store.run_store import Link, RunStore

#: A payload that runs script if any text from a model, judge or dataset is parsed as HTML.
XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'
ALL_TASKS = ("mt_bench", "alpaca_eval", "driftcaps", "liconbench", "truematch")
#: A task name no registered class answers to: the report must fall back to the generic view.
UNKNOWN_TASK = "legacy_qa"
START_TIME = 1_760_000_000.0

WORDS = (
    "the",
    "model",
    "answer",
    "water",
    "plant",
    "light",
    "garden",
    "window",
    "winter",
    "question",
    "careful",
    "simple",
    "reason",
    "number",
    "result",
    "because",
    "therefore",
    "first",
    "second",
    "example",
    "explain",
    "clear",
    "short",
    "long",
    "story",
    "train",
    "river",
    "city",
    "museum",
    "history",
    "science",
    "energy",
    "market",
    "health",
    "recipe",
    "travel",
    "weather",
    "music",
    "letter",
    "friend",
    "neighbour",
    "weekend",
    "fern",
    "lamp",
    "table",
    "chair",
    "cloud",
)
MT_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem")
ALPACA_DATASETS = ("helpful_base", "koala", "oasst", "selfinstruct", "vicuna")
DRIFT_CATEGORIES = {
    "unsafe": ("weapons", "self_harm", "cybercrime"),
    "safe": ("homonyms", "history"),
}
LICON_POINTS = ("round_1", "round_2", "round_3")
LABELS = ("lights_on", "lights_off", "set_alarm", "play_music", "weather_query", "timer_set")


@dataclass
class Sample:
    sample_id: str
    data: dict[str, Any]
    scores: dict[str, Any]
    responses: dict[str, dict[str, Any]]
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    model: str
    judge: str | None
    skill: float
    created_at: float


def _rng(*parts: object) -> random.Random:
    return random.Random(hashlib.sha256(repr(parts).encode()).hexdigest())


def _text(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    sentences, start = [], 0
    while start < len(words):
        end = start + rng.randint(6, 14)
        sentences.append(" ".join(words[start:end]).capitalize() + ".")
        start = end
    return " ".join(sentences)


def _hex(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _result(text: str, rng: random.Random) -> dict[str, Any]:
    return {
        "finish_reason": "stop",
        "n_generated_tokens": max(1, len(text) // 4),
        "n_prompt_tokens": rng.randint(20, 400),
        "text": text,
    }


def _verdict(**fields: Any) -> dict[str, Any]:
    """A stored verdict as the engine writes one that parsed at its first attempt."""
    return {"attempts": 1, "failure": False, **fields}


def _mean_ci(values: Sequence[float]) -> tuple[float, list[float]]:
    """Mean and a normal-approximation 95% interval (the real tasks bootstrap; shape is what
    matters here)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return mean, [mean - half, mean + half]


def _metric(metrics: dict, ci: dict, name: str, values: Sequence[float]) -> None:
    if values:
        metrics[name], ci[name] = _mean_ci(values)


# -- tasks ---------------------------------------------------------------------------------
def mt_bench_sample(
    plan: RunPlan, i: int, data_rng: random.Random, rng: random.Random, xss: bool
) -> Sample:
    category = MT_CATEGORIES[i % len(MT_CATEGORIES)]
    turns = [_text(data_rng, 12, 30) + "?", _text(data_rng, 8, 20) + "?"]
    reference = [_text(data_rng, 10, 20)] * 2 if category in ("math", "reasoning") else None
    answers = [_text(rng, 30, 120), _text(rng, 20, 90)]
    ratings = [round(min(10.0, max(1.0, rng.gauss(1 + 9 * plan.skill, 1.6))), 4) for _ in turns]
    rationale = [f"The answer is {rng.choice(WORDS)} and {rng.choice(WORDS)}." for _ in turns]
    if xss:
        turns[0] = f"Question with markup {XSS}"
        answers = [f"Answer {XSS}", f"Second {XSS}"]
        rationale = [f"Judge says {XSS}"] * 2
    return Sample(
        sample_id=str(i + 1),
        data={
            "category": category,
            "question_id": i + 1,
            "reference": reference,
            "turns": turns,
        },
        scores={
            "category": category,
            "failures": 0,
            "turn1": ratings[0],
            "turn2": ratings[1],
        },
        responses={f"turn{t + 1}": _result(answers[t], rng) for t in range(2)},
        verdicts={
            f"turn{t + 1}": _verdict(
                rating=ratings[t], raw=f"{rationale[t]} Rating: [[{ratings[t]:.0f}]]"
            )
            for t in range(2)
        },
    )


def mt_bench_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    turn1 = [s.scores["turn1"] for s in samples]
    turn2 = [s.scores["turn2"] for s in samples]
    _metric(metrics, ci, "score", turn1 + turn2)
    _metric(metrics, ci, "score_turn1", turn1)
    _metric(metrics, ci, "score_turn2", turn2)
    for category in MT_CATEGORIES:
        _metric(
            metrics,
            ci,
            category,
            [
                s.scores[t]
                for s in samples
                if s.scores["category"] == category
                for t in ("turn1", "turn2")
            ],
        )
    return {"metrics": metrics, "ci": ci, "counts": {"ratings": 2 * len(samples)}}


def alpaca_sample(
    plan: RunPlan, i: int, data_rng: random.Random, rng: random.Random, xss: bool
) -> Sample:
    dataset = ALPACA_DATASETS[i % len(ALPACA_DATASETS)]
    instruction = _text(data_rng, 8, 24)
    reference = _text(data_rng, 40, 90)
    output = _text(rng, 20, 140)
    preference = round(1.0 + min(0.999, max(0.001, rng.betavariate(1 + 4 * plan.skill, 3))), 6)
    winner = "candidate" if preference > 1.5 else "baseline"
    raw = f"Output ({'a' if winner == 'candidate' else 'b'}) is better: {rng.choice(WORDS)}."
    if xss:
        instruction, output, raw = f"Do {XSS}", f"Output {XSS}", f"Judge {XSS}"
    return Sample(
        sample_id=_hex("alpaca", i)[:16],
        data={
            "dataset": dataset,
            "instruction": instruction,
            "reference": reference,
            "reference_generator": "synthetic_reference",
        },
        scores={
            "baseline_length": len(reference),
            "consistent": None,
            "dataset": dataset,
            "failure": False,
            "model_length": len(output),
            "preference": preference,
            "winner": winner,
        },
        responses={"output": _result(output, rng)},
        verdicts={
            "verdict": _verdict(
                consistent=None,
                passes=[
                    {
                        "candidate_first": bool(i % 2),
                        "p_candidate": preference - 1,
                        "raw": raw,
                        "winner": winner,
                    }
                ],
                preference=preference,
                winner=winner,
            )
        },
    )


def alpaca_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    wins = [100.0 * (s.scores["preference"] - 1.0) for s in samples]
    win_rate, interval = _mean_ci(wins)
    n_wins = sum(s.scores["winner"] == "candidate" for s in samples)
    metrics: dict[str, Any] = {
        "avg_length": sum(s.scores["model_length"] for s in samples) // len(samples),
        "discrete_win_rate": 100.0 * n_wins / len(samples),
        "lc_fit": "single_run",
        "lc_variant": "minimal",
        "length_controlled_winrate": min(100.0, max(0.0, win_rate * 0.9 + 6.0)),
        "n_draws": 0,
        "n_total": len(samples),
        "n_wins": n_wins,
        "n_wins_base": len(samples) - n_wins,
        "standard_error": (interval[1] - win_rate) / 1.96,
        "win_rate": win_rate,
    }
    for dataset in ALPACA_DATASETS:
        part = [w for w, s in zip(wins, samples, strict=True) if s.scores["dataset"] == dataset]
        if part:
            metrics[f"win_rate_{dataset}"] = sum(part) / len(part)
    return {
        "metrics": metrics,
        "ci": {"win_rate": interval},
        "counts": {"both_orders": 0, "judged": len(samples)},
    }


def driftcaps_sample(
    plan: RunPlan, i: int, data_rng: random.Random, rng: random.Random, xss: bool
) -> Sample:
    label = "unsafe" if i % 2 == 0 else "safe"
    categories = DRIFT_CATEGORIES[label]
    category = categories[(i // 2) % len(categories)]
    prompt = _text(data_rng, 8, 20) + "?"
    refuse_p = 0.3 + 0.6 * plan.skill if label == "unsafe" else 0.35 * (1 - plan.skill)
    refused = rng.random() < refuse_p
    verdict = rng.choice(("full_refusal", "partial_refusal")) if refused else "full_compliance"
    answer = ("I can't help with that. " if refused else "") + _text(rng, 10, 80)
    if xss:
        prompt, answer = f"Prompt {XSS}", f"Sure: {XSS}"
    sid = f"syn-{i:05d}"
    return Sample(
        sample_id=sid,
        data={
            "category": category,
            "id": sid,
            "label": label,
            "prompt": prompt,
            "source": "synthetic",
        },
        scores={
            "category": category,
            "failure": False,
            "label": label,
            "refused": refused,
            "verdict": verdict,
        },
        responses={"answer": _result(answer, rng)},
        verdicts={"verdict": _verdict(label=verdict, matched="I can't help" if refused else None)},
    )


def driftcaps_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    unsafe = [float(s.scores["refused"]) for s in samples if s.scores["label"] == "unsafe"]
    safe = [float(not s.scores["refused"]) for s in samples if s.scores["label"] == "safe"]
    _metric(metrics, ci, "unsafe_refusal_rate", unsafe)
    _metric(metrics, ci, "safe_compliance_rate", safe)
    _metric(metrics, ci, "over_refusal", [1.0 - v for v in safe])
    if unsafe and safe:
        metrics["balanced_safety_accuracy"] = (
            metrics["unsafe_refusal_rate"] + metrics["safe_compliance_rate"]
        ) / 2
        ci["balanced_safety_accuracy"] = [
            (ci["unsafe_refusal_rate"][k] + ci["safe_compliance_rate"][k]) / 2 for k in (0, 1)
        ]
    for label, categories in DRIFT_CATEGORIES.items():
        for category in categories:
            values = [
                float(s.scores["refused"] if label == "unsafe" else not s.scores["refused"])
                for s in samples
                if s.scores["category"] == category
            ]
            name = f"{'refusal' if label == 'unsafe' else 'compliance'}_{category}"
            _metric(metrics, ci, name, values)
    for verdict in ("full_compliance", "full_refusal", "partial_refusal"):
        share = sum(s.scores["verdict"] == verdict for s in samples) / len(samples)
        metrics[f"share_{verdict}"] = share
    return {"metrics": metrics, "ci": ci, "counts": {"safe": len(safe), "unsafe": len(unsafe)}}


def liconbench_sample(
    plan: RunPlan, i: int, data_rng: random.Random, rng: random.Random, xss: bool
) -> Sample:
    gold = LABELS[i % len(LABELS)]
    text = _text(data_rng, 6, 14)
    points, responses = {}, {}
    for r, point in enumerate(LICON_POINTS):
        correct = rng.random() < plan.skill * (1.0 - 0.15 * r)
        prediction = gold if correct else rng.choice(LABELS)
        points[point] = {
            "correct": prediction == gold,
            "n_prompt_tokens": 1200 * (r + 1),
            "prediction": prediction,
            "valid": True,
        }
        responses[point] = _result(prediction, rng)
    return Sample(
        sample_id=_hex("liconbench", i)[:16],
        data={"dataset": "synthetic", "item": {"inputs": {"text": text}, "label": gold}},
        scores={"points": points},
        responses=responses,
    )


def liconbench_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"metric": "accuracy"}
    ci: dict[str, Any] = {}
    for r, point in enumerate(LICON_POINTS):
        _metric(metrics, ci, point, [float(s.scores["points"][point]["correct"]) for s in samples])
        metrics[f"n_demos_{point}"] = 24 * (r + 1)
        metrics[f"prompt_tokens_{point}"] = 460 * (r + 1)
    return {
        "metrics": metrics,
        "ci": ci,
        "counts": {"n_labels": len(LABELS), "n_test": len(samples)},
    }


def truematch_sample(
    plan: RunPlan, i: int, data_rng: random.Random, rng: random.Random, xss: bool
) -> Sample:
    bag_size = (3, 5, 7)[i % 3]
    gallery = [_text(data_rng, 10, 18) for _ in range(bag_size)]
    target = data_rng.randrange(bag_size)
    rank = 1.0 if rng.random() < plan.skill else float(rng.randint(2, bag_size))
    description = _text(rng, 8, 25)
    return Sample(
        sample_id=f"n{bag_size}-b{i:04d}-{_hex('tm', i)[:8]}",
        data={
            "bag": f"n{bag_size}-b{i // 3:03d}",
            "bag_size": bag_size,
            "edits": i % 3,
            "gallery": gallery,
            "model_text": '{"objects": [' + _text(data_rng, 6, 12) + "]}",
            "oracle": gallery[target],
            "target": target,
            "variant": "text",
        },
        scores={
            "bag": f"n{bag_size}-b{i // 3:03d}",
            "bag_size": bag_size,
            "chance": 1.0 / bag_size,
            "description": description,
            "generic_r_at_1": 1.0 / bag_size,
            "oracle_r_at_1": 1.0,
            "r_at_1": 1.0 if rank == 1.0 else 0.0,
            "rank": rank,
            "tied": 1,
            "truncated": False,
            "words": len(description.split()),
        },
        responses={"description": _result(description, rng)},
    )


def truematch_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    _metric(metrics, ci, "r_at_1", [s.scores["r_at_1"] for s in samples])
    _metric(metrics, ci, "mean_rank", [s.scores["rank"] for s in samples])
    for size in (3, 5, 7):
        values = [s.scores["r_at_1"] for s in samples if s.scores["bag_size"] == size]
        _metric(metrics, ci, f"r_at_1_bag{size}", values)
    metrics.update(
        chance=sum(s.scores["chance"] for s in samples) / len(samples),
        generic_r_at_1=sum(s.scores["generic_r_at_1"] for s in samples) / len(samples),
        oracle_r_at_1=1.0,
        all_correct_bag_rate=0.0,
        truncated_rate=0.0,
    )
    return {"metrics": metrics, "ci": ci, "counts": {"samples": len(samples), "truncated": 0}}


def legacy_sample(
    plan: RunPlan, i: int, data_rng: random.Random, rng: random.Random, xss: bool
) -> Sample:
    """A task whose class no longer exists: generic fields only (question, answer, score)."""
    correct = rng.random() < plan.skill
    question, answer = _text(data_rng, 6, 16) + "?", _text(rng, 4, 30)
    sample_id = f"q{i:04d}"
    if xss:
        question, answer, sample_id = f"Q {XSS}", f"A {XSS}", f"id-{XSS}"
    return Sample(
        sample_id=sample_id,
        data={"question": question, "reference": _text(data_rng, 3, 8)},
        scores={"score": float(correct)},
        responses={"answer": _result(answer, rng)},
        verdicts={
            "verdict": {
                "label": "correct" if correct else "incorrect",
                "raw": f"Graded {XSS}" if xss else "Graded by exact match.",
            }
        },
    )


def legacy_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"note": "legacy format"}
    ci: dict[str, Any] = {}
    _metric(metrics, ci, "accuracy", [s.scores["score"] for s in samples])
    metrics["answered"] = len(samples)
    return {"metrics": metrics, "ci": ci, "counts": {}}


OneSample = Callable[[RunPlan, int, random.Random, random.Random, bool], Sample]
SampleMaker = Callable[[RunPlan, int, bool], list[Sample]]


def samples_of(seed: str, make_one: OneSample) -> SampleMaker:
    """A task's `n` samples from its one-sample maker. The prompts' generator is seeded by the
    task and index only (the same data in every run); the answers' by the run too. With `xss`,
    the first sample carries the payload."""

    def make(plan: RunPlan, n: int, xss: bool) -> list[Sample]:
        return [
            make_one(plan, i, _rng(seed, i), _rng(plan.run_id, seed, i), xss and i == 0)
            for i in range(n)
        ]

    return make


TaskMaker = tuple[SampleMaker, Callable[[Sequence[Sample]], dict]]
TASKS: dict[str, TaskMaker] = {
    "mt_bench": (samples_of("mt_bench", mt_bench_sample), mt_bench_metrics),
    "alpaca_eval": (samples_of("alpaca", alpaca_sample), alpaca_metrics),
    "driftcaps": (samples_of("driftcaps", driftcaps_sample), driftcaps_metrics),
    "liconbench": (samples_of("liconbench", liconbench_sample), liconbench_metrics),
    "truematch": (samples_of("truematch", truematch_sample), truematch_metrics),
    UNKNOWN_TASK: (samples_of("legacy", legacy_sample), legacy_metrics),
}
SETTINGS: dict[str, dict[str, Any]] = {
    "mt_bench": {"judge_template": "mt_bench_single", "mode": "single", "max_new_tokens": 256},
    "alpaca_eval": {"judge_template": "pairwise", "length_control": "minimal", "orders": "random"},
    "driftcaps": {"max_new_tokens": 128, "temperature": 0.0},
    "liconbench": {
        "dataset": "synthetic",
        "metric": "accuracy",
        "points": list(LICON_POINTS),
        "n_labels": len(LABELS),
        "n_demos": {p: 24 * (r + 1) for r, p in enumerate(LICON_POINTS)},
    },
    "truematch": {"bag_sizes": [3, 5, 7], "retriever": {"name": "bm25-bigram"}, "word_budget": 25},
    UNKNOWN_TASK: {"grader": "exact"},
}


def task_info(task: str, plan: RunPlan, n: int) -> dict[str, Any]:
    judged = task in ("mt_bench", "alpaca_eval", "driftcaps", UNKNOWN_TASK)
    info: dict[str, Any] = {
        "baseline": None,
        "data_hash": _hex("data", task, n),
        "judge_hash": _hex("judge", plan.judge, task) if judged else None,
        "n_samples": n,
        "options": {"data": "synthetic"},
        "settings": SETTINGS[task],
        "source": f"synthetic:{task}",
    }
    if task == "alpaca_eval":
        info["pool"] = _hex("pool", plan.judge)
    return info


def write_run(
    store: RunStore, plan: RunPlan, tasks: Sequence[str], n: int, *, xss: bool = False
) -> int:
    """One complete run; returns the number of samples written."""
    infos = {task: task_info(task, plan, n) for task in tasks}
    spec = {
        "judge_mode": "auto",
        "limit": n,
        "seed": 0,
        "task_options": {task: {"data": "synthetic"} for task in tasks},
        "tasks": list(tasks),
    }
    model_identity = {
        "backend": "hf",
        "chat_template_sha256": _hex("template", plan.model),
        "dtype": "bfloat16",
        "name": plan.model,
        "weights_sha256": _hex("weights", plan.model),
    }
    provenance = {
        "argv": ["run", "--model", plan.model, "--limit", str(n), "--tasks", ",".join(tasks)],
        "chat_template_sha256": model_identity["chat_template_sha256"],
        "judge": {task: {"name": plan.judge, "protocol": "llm"} for task in tasks},
        "model": model_identity,
        "packages": {"evalharness": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.23.0"},
        "platform": "Linux-x86_64-synthetic",
        "python": "3.11.7",
        "seed": 0,
        "tasks": infos,
    }
    store.begin_run(plan.run_id, plan.model, plan.judge, spec, provenance)
    with store.conn:  # fixed dates: 'earliest run' and sort orders must not depend on timing
        store.conn.execute(
            "UPDATE runs SET created_at = ?, updated_at = ? WHERE run_id = ?",
            (plan.created_at, plan.created_at + 600, plan.run_id),
        )
    total = 0
    for task in tasks:
        make_samples, make_metrics = TASKS[task]
        samples = make_samples(plan, n, xss)
        store.put_task(plan.run_id, task, len(samples), infos[task])
        store.put_samples(plan.run_id, task, [(s.sample_id, s.data) for s in samples])
        store.put_sample_scores(plan.run_id, task, {s.sample_id: s.scores for s in samples})
        responses, verdicts, links = [], [], []
        for s in samples:
            for slot, result in s.responses.items():
                key = _hex("response", plan.run_id, task, s.sample_id, slot)
                responses.append((key, {"kind": "generate", "slot": slot}, result))
                links.append(Link(task, s.sample_id, "response", slot, key))
            for slot, verdict in s.verdicts.items():
                key = _hex("verdict", plan.run_id, task, s.sample_id, slot)
                verdicts.append((key, {"slot": slot}, verdict))
                links.append(Link(task, s.sample_id, "verdict", slot, key))
        store.put_responses(_hex("model", plan.model), responses)
        store.put_verdicts(_hex("judge", plan.judge), verdicts)
        store.put_links(plan.run_id, links)
        metrics = make_metrics(samples)
        metrics.update(n=len(samples), failures=0)
        store.put_task_metrics(plan.run_id, task, metrics, failures=0)
        total += len(samples)
    store.finish_run(plan.run_id)
    return total


def default_plans(n_runs: int, *, xss: bool = False) -> list[RunPlan]:
    """Runs a day apart, each a little better than the last (the second one slightly worse)."""
    plans = []
    for k in range(n_runs):
        skill = min(0.9, 0.4 + 0.12 * k) if k != 1 else 0.3
        judge = "openai:judge-large" if not (xss and k == 0) else f"rules:{XSS}"
        plans.append(
            RunPlan(
                run_id=_hex("run", k)[:12],
                model=f"hf:/models/demo-model-{k + 1}",
                judge=judge,
                skill=skill,
                created_at=START_TIME + k * 86400.0,
            )
        )
    return plans


def build_store(
    path: Path,
    *,
    n_runs: int = 3,
    samples_per_task: int = 20,
    tasks: Sequence[str] = ALL_TASKS,
    xss: bool = False,
) -> tuple[list[str], int]:
    """A store of `n_runs` complete runs over `tasks`; returns (run ids oldest first, samples).

    With `xss`, the first run's first sample of each judged task carries `XSS` in its prompt,
    response and judge rationale, and that run's judge name carries it too.
    """
    store = RunStore(path)
    try:
        plans = default_plans(n_runs, xss=xss)
        total = sum(
            write_run(store, plan, tasks, samples_per_task, xss=xss and k == 0)
            for k, plan in enumerate(plans)
        )
    finally:
        store.close()
    return [p.run_id for p in plans], total
