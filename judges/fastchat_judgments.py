"""Ratings imported from a FastChat `model_judgment/JUDGE_single.jsonl` file, not asked of a
judge.

The file rates each (question, turn) of each model 1-10, -1 when the judge's output did not
parse. An item is matched on its question (turn-1 text -> question_id, from the questions the
task asks) and turn; a -1 rating or a missing row is a counted failure, excluded from the means
exactly as FastChat's `show_result` drops `score == -1`. When the row's `user_prompt` is kept,
the judged answer must appear in it, so a rating of another answer is never counted as this one.

The identity includes the file's sha256 and the model's name in it: a corrected file or another
model's rows give new verdicts and a new run id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from evalharness.engine.requests import Result
from evalharness.formats.fastchat import Judgment
from evalharness.tasks.base import JudgeItem

from .base import ImportedJudge

MATCHING = "question_id by turn-1 text, turn; judged answer within user_prompt when present"
NOT_IN_FILE = "not_in_judgments_file"
INVALID = "invalid_rating"
MISMATCH = "judgment_mismatch"


def _failure(reason: str, error: str, **extra: Any) -> dict[str, Any]:
    return {"rating": -1.0, "failure": True, "reason": reason, "error": error, **extra}


class FastChatJudgmentsJudge(ImportedJudge):
    protocols: ClassVar[tuple[str, ...]] = ("rating",)
    kind: ClassVar[str] = "imported_fastchat_judgments"
    matching: ClassVar[str] = MATCHING

    def __init__(
        self,
        path: Path,
        model: str,
        judge_model: str,
        judgments: Mapping[tuple[int, int], Judgment],
        questions: Sequence[dict[str, Any]],
    ) -> None:
        self.model = model
        self.judge_model = judge_model
        self.judgments = dict(judgments)
        self.ids = {str(q["turns"][0]): int(q["question_id"]) for q in questions}
        super().__init__(path, f"fastchat:{judge_model}", model=model)

    def verdict(self, item: JudgeItem, results: Sequence[Result]) -> dict[str, Any]:
        turn = int(item.fields["turn"])
        qid = self.ids.get(item.fields["question_1"])
        row = self.judgments.get((qid, turn)) if qid is not None else None
        if row is None:
            return _failure(NOT_IN_FILE, f"question {qid} turn {turn} not in {self.path.name}")
        answer = item.fields["answer_2" if turn == 2 else "answer_1"]
        if row.user_prompt and answer.strip() not in row.user_prompt:
            return _failure(MISMATCH, f"{row.where}: judged another answer than this model's")
        if row.score is None:
            error = f"{row.where}: score -1 (no valid rating)"
            return _failure(INVALID, error, judge=row.judge, raw=row.judgment)
        return {"rating": row.score, "failure": False, "judge": row.judge, "raw": row.judgment}
