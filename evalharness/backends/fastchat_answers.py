"""Recorded MT-Bench answers from a FastChat `model_answer/MODEL.jsonl` file.

FastChat keys answers by `question_id`; the engine asks for a turn by its conversation. The
importer gives this backend the questions the task will ask, so each turn's request (turn 1:
the first question; turn 2: the first question, the recorded first answer, the second
question) maps back to one row of the file. Its identity is the file's content hash, so
re-importing the same file reuses every stored answer and verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalharness.backends.base import Backend
from evalharness.engine.requests import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from evalharness.errors import InputError
from evalharness.formats.fastchat import RECORDS_KEY, Answer
from evalharness.store.hashing import sha256_file


class FastChatAnswersBackend(Backend):
    recorded = True

    def __init__(
        self, path: Path, name: str, answers: Mapping[int, Answer], questions: Sequence[dict]
    ) -> None:
        """`answers` already checked against `questions` (every question has two turns)."""
        self.path = path
        self.name = name
        self.batch_size = 1000
        self.records = [
            {"question_id": answer.question_id, **answer.record}
            for answer in answers.values()
            if answer.record
        ]
        self.by_dialogue: dict[tuple[str, ...], str] = {}
        for question in questions:
            answer = answers[int(question["question_id"])]
            first, second = question["turns"]
            for key, text in (((first,), answer.turns[0]), ((first, second), answer.turns[1])):
                if self.by_dialogue.get(key, text) != text:
                    raise InputError(
                        f"{answer.where}: question {question['question_id']} repeats another "
                        "question's text with a different answer"
                    )
                self.by_dialogue[key] = text

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "backend": "fastchat_answers",
            "name": self.name,
            "file_sha256": sha256_file(self.path),
        }

    def recorded_metadata(self) -> dict[str, Any] | None:
        """Each answer's `answer_id`, `model_id` and `tstamp` as the file wrote them."""
        return {RECORDS_KEY: self.records} if self.records else None

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        for request in requests:
            users = tuple(m.content for m in request.messages if m.role == "user")
            text = self.by_dialogue.get(users)
            if text is None:
                raise InputError(f"{self.path}: no answer for the question {users[-1][:60]!r}")
            results.append(GenerateResult(text=text))
        return results

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise InputError(f"{self.path} holds recorded answers; it cannot score")
