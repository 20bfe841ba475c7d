"""The data steps of one self-rewarding round: sample K answers per prompt, rate each, pair them.

Self-rewarding training (Yuan et al., 2024, "Self-Rewarding Language Models") makes its own
preference data: the current model answers every prompt K times, a judge rates every answer
(the model itself as an LLM judge, or any other judge), and the highest-rated answer of a prompt
becomes `chosen`, the lowest-rated `rejected`. A prompt whose rated answers all tie, or that has
fewer than two rated answers (a judge whose verdict did not parse), gives no pair; both are
counted, so a round that learned from few prompts says so.

Every step's output is a JSONL file in the round's folder, written whole or not at all (a
temporary file renamed into place), so a pipeline stopped in the middle of a step redoes only
that step, and a user can read what the model generated, how each answer was rated, and which
pairs it was trained on.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.backends.base import Backend
from evalharness.engine.requests import (
    FailedResult,
    GenerateRequest,
    Message,
    Result,
    SamplingParams,
)

#: The judge prompt an LLM judge (`self` included) rates answers with: MT-Bench's single-answer
#: 1-10 rating, as best-of-N decoding rates its candidates.
RATING_TEMPLATE = "mt_bench_single"


@dataclass(frozen=True)
class Sampling:
    """How a round samples: K answers per prompt, answer i seeded `seed + i`."""

    samples: int
    temperature: float
    max_new_tokens: int
    seed: int


def prompt_messages(prompt: Any) -> tuple[Message, ...]:
    """A prompt row's `prompt` (a string or chat messages) as the messages the model answers."""
    if isinstance(prompt, str):
        return (Message("user", prompt),)
    return tuple(Message(m["role"], m["content"]) for m in prompt)


def generate_samples(backend: Backend, prompts: Sequence[Any], sampling: Sampling) -> list[dict]:
    """K sampled answers per prompt in one batched call of the backend; one row per answer."""
    requests = [
        GenerateRequest(
            prompt_messages(prompt),
            SamplingParams(
                temperature=sampling.temperature,
                max_new_tokens=sampling.max_new_tokens,
                seed=sampling.seed + index,
            ),
        )
        for prompt in prompts
        for index in range(sampling.samples)
    ]
    results = backend.generate(requests)
    rows = []
    for position, (request, result) in enumerate(zip(requests, results, strict=True)):
        prompt_index, sample = divmod(position, sampling.samples)
        rows.append(
            {
                "prompt_index": prompt_index,
                "sample": sample,
                "seed": request.sampling.seed,
                "prompt": prompts[prompt_index],
                "text": result.text,
                "finish_reason": result.finish_reason,
            }
        )
    return rows


class RatingJudge:
    """Any judge of the harness as a rater of one answer: a number, or None when it gave none.

    An LLM judge (`self` too) and a reward model rate with the `rating` protocol (the MT-Bench
    prompt; a reward model's raw reward); a rule judge labels the answer, and `label_ratings`
    says what each label is worth.
    """

    def __init__(self, judge: Any, label_ratings: dict[str, float] | None) -> None:
        self.judge = judge
        self.label_ratings = label_ratings

    def item(self, row: dict[str, Any]) -> Any:
        from evalharness.backends.best_of_n import rating_fields
        from evalharness.tasks.base import JudgeItem

        messages = prompt_messages(row["prompt"])
        if self.label_ratings is not None:
            prompt = "\n\n".join(m.content for m in messages)
            return JudgeItem("classify", "", {"text": row["text"], "prompt": prompt})
        return JudgeItem("rating", RATING_TEMPLATE, rating_fields(messages, row["text"]))

    def rating(self, verdict: dict[str, Any]) -> float | None:
        if verdict.get("failure"):
            return None
        if self.label_ratings is not None:
            return self.label_ratings[verdict["label"]]
        rating = float(verdict["rating"])
        return rating if math.isfinite(rating) else None

    def judge_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`rows` with each answer's `verdict` and `rating`; an unparseable text verdict is
        asked again (sampled) up to the judge's `retries`, as the evaluation engine does."""
        items = [self.item(row) for row in rows]
        verdicts: list[dict[str, Any]] = [{} for _ in rows]
        pending = list(range(len(rows)))
        for attempt in range(self.judge.retries + 1):
            groups = [self.judge.requests_for(items[i], attempt) for i in pending]
            flat = [request for group in groups for request in group]
            results = self.judge.backend.answer_tolerant(flat) if flat else []
            cursor, retry = 0, []
            for index, group in zip(pending, groups, strict=True):
                window: list[Result | FailedResult] = results[cursor : cursor + len(group)]
                cursor += len(group)
                failed = [r for r in window if isinstance(r, FailedResult)]
                if failed:
                    verdicts[index] = {"failure": True, "error": failed[0].error}
                    continue
                verdicts[index] = self.judge.marked_verdict(items[index], window)
                if verdicts[index].get("failure") and verdicts[index].get("retryable"):
                    retry.append(index)
            pending = retry
            if not pending:
                break
        return [
            {**row, "rating": self.rating(verdict), "verdict": verdict}
            for row, verdict in zip(rows, verdicts, strict=True)
        ]


def build_pairs(judged: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per prompt, its highest-rated answer (chosen) against its lowest-rated (rejected).

    Among equal ratings the lowest sample index is taken, so the pairs are a function of the
    ratings alone. Pairs are conversations (the prompt's messages, one assistant turn each), so
    training sees the chat template the answers were generated under. Returns the pairs and
    the counts: prompts, pairs, prompts skipped because every rated answer tied, prompts
    skipped for fewer than two rated answers, and answers without a rating.
    """
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for row in judged:
        by_prompt.setdefault(row["prompt_index"], []).append(row)
    pairs = []
    counts = {"prompts": len(by_prompt), "pairs": 0, "ties": 0, "unrated": 0}
    counts["unrated_answers"] = sum(1 for row in judged if row["rating"] is None)
    for prompt_index, rows in sorted(by_prompt.items()):
        rated = sorted((r for r in rows if r["rating"] is not None), key=lambda r: r["sample"])
        if len(rated) < 2:
            counts["unrated"] += 1
            continue
        best = max(rated, key=lambda r: r["rating"])
        worst = min(rated, key=lambda r: r["rating"])
        if best["rating"] == worst["rating"]:
            counts["ties"] += 1
            continue
        messages = [{"role": m.role, "content": m.content} for m in prompt_messages(best["prompt"])]
        pairs.append(
            {
                "prompt": messages,
                "chosen": [{"role": "assistant", "content": best["text"]}],
                "rejected": [{"role": "assistant", "content": worst["text"]}],
                "prompt_index": prompt_index,
                "chosen_sample": best["sample"],
                "rejected_sample": worst["sample"],
                "chosen_rating": best["rating"],
                "rejected_rating": worst["rating"],
            }
        )
    counts["pairs"] = len(pairs)
    return pairs, counts


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write `rows` whole or not at all: a step stopped halfway leaves no file to resume from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    os.replace(partial, path)


def write_json(path: Path, value: dict[str, Any]) -> None:
    """One JSON document, written whole or not at all (a round's state and report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The rows a finished step wrote (`write_jsonl`)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
