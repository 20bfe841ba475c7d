"""`outputs:` backend: answers produced elsewhere, read from a file instead of generated.

Users have model outputs from other harnesses (AlpacaEval's `model_outputs.json`, a JSONL of
`instruction`/`output`) and want them judged without regenerating. This backend answers a
single-turn chat request with the recorded output for that instruction. Its identity is the
file's content hash, so judging the same file twice reuses every verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalharness.backends.base import Backend
from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from evalharness.errors import InputError
from evalharness.formats.records import UniqueIds, read_records, require
from evalharness.store.hashing import sha256_file


def read_outputs(path: Path) -> tuple[dict[str, str], str | None]:
    """instruction -> output, and the `generator` named in the file (if any)."""
    outputs: dict[str, str] = {}
    generators = set()
    instructions = UniqueIds("instruction")
    for where, row in read_records(path):
        instruction = require(where, row, "instruction", str)
        output = require(where, row, "output", str)
        instructions.add(where, instruction, described=f"instruction {instruction[:60]!r}")
        outputs[instruction] = output
        if row.get("generator"):
            generators.add(str(row["generator"]))
    generator = generators.pop() if len(generators) == 1 else None
    return outputs, generator


class OutputsBackend(Backend):
    recorded = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.path = Path(spec.name).expanduser()
        if not self.path.exists():
            raise InputError(f"outputs:{spec.name}: no such file")
        self.outputs, self.generator = read_outputs(self.path)
        self.batch_size = 1000

    @property
    def identity(self) -> dict[str, Any]:
        label = self.spec.raw.partition(":")[2]
        named = label if label != self.spec.name else None  # `import --name` sets it
        return {
            "backend": "outputs",
            "name": named or self.generator or self.path.stem,
            "file_sha256": sha256_file(self.path),
        }

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        for request in requests:
            users = [m for m in request.messages if m.role == "user"]
            if len(users) != 1 or request.messages[-1].role != "user":
                raise InputError(
                    f"outputs:{self.spec.name} holds single-turn answers; this task asks for a "
                    "multi-turn conversation"
                )
            instruction = users[0].content
            if instruction not in self.outputs:
                raise InputError(
                    f"outputs:{self.spec.name} has no output for the instruction "
                    f"{instruction[:60]!r}"
                )
            results.append(GenerateResult(text=self.outputs[instruction]))
        return results

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise InputError(f"outputs:{self.spec.name} holds recorded answers; it cannot score")
