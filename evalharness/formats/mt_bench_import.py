"""`evalharness import mt-bench`: FastChat MT-Bench answers (and ratings) become a run.

The answers file is matched to the questions the mt_bench task asks, by `question_id`; its
ratings come from a FastChat single-judgment file (no judge call; the judge is the file's judge
model plus the file's sha256) or from `--judge` now. The run's `score`, `score_turn1` and
`score_turn2` are then FastChat `show_result`'s numbers: means over the valid (not -1) ratings,
the overall one pooling both turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalharness.backends.spec import parse_model_spec
from evalharness.errors import InputError
from evalharness.formats.fastchat import Answer, model_name, read_answers, read_single_judgments
from evalharness.formats.import_plan import ImportPlan

TASK = "mt_bench"


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


def plan_mt_bench_import(
    answers: str,
    *,
    judgments: str | None,
    judge: str | None,
    questions: str = "auto",
    reference_answers: str | None = None,
    judge_prompts: str | None = None,
    name: str | None = None,
) -> ImportPlan:
    """The recorded-answers backend (and imported-ratings judge) the mt_bench run replays."""
    from evalharness.backends.fastchat_answers import FastChatAnswersBackend
    from evalharness.formats.records import input_file
    from evalharness.judges.fastchat_judgments import FastChatJudgmentsJudge
    from evalharness.tasks.mt_bench.loader import load_questions

    answers_path = input_file(Path(answers), "--answers")
    judgments_path = input_file(Path(judgments), "--judgments") if judgments else None
    options = {"data": questions}
    if reference_answers:
        options["reference"] = reference_answers
    if judge_prompts:
        options["judge_prompts"] = judge_prompts
    loaded = load_questions(options["data"], options.get("reference"))
    recorded = read_answers(answers_path)
    check_answers(answers_path, recorded, loaded.questions, loaded.source)
    name = name or model_name(answers_path)
    backend = FastChatAnswersBackend(answers_path, name, recorded, loaded.questions)
    model = parse_model_spec(f"outputs:{answers_path}").with_options(raw=f"outputs:{name}")
    judge_spec, use_judge = judge, None
    if judgments_path is not None:
        ratings, judge_model = read_single_judgments(judgments_path, name)
        known = {int(q["question_id"]) for q in loaded.questions}
        for rating in ratings.values():
            if rating.question_id not in known:
                raise InputError(
                    f"{rating.where}: question_id {rating.question_id} is not a question of "
                    f"{loaded.source}"
                )
        use_judge = FastChatJudgmentsJudge(
            judgments_path, name, judge_model, ratings, loaded.questions
        )
        judge_spec = f"fastchat-judgments:{judgments_path}"
    runner_options = {"use_backend": backend, "use_judge": use_judge}
    return ImportPlan(model, TASK, options, judge_spec, runner_options=runner_options)
