"""`bon:N:SCORER:MODEL`: best-of-N decoding around any generating model spec.

Best-of-N (rejection sampling against a reward model or judge) is the simplest inference-time
alignment method and the baseline every trained method must beat at equal compute, so it is a
model spec: every task, judge and cache works on it unchanged.

For each chat request the wrapped MODEL samples N answers and SCORER rates each one; the
highest-rated answer is the response (the lowest seed wins ties). SCORER is
- `rm:PATH_OR_HUB_ID`: a reward model, given the whole dialogue plus the candidate answer;
- `self` (the wrapped model) or an LLM judge spec (`hf:`, `openai:`, alias): a single-answer
  1-10 rating with the MT-Bench judge prompt, read from probabilities (local judges) or text
  (openai judges); an unparseable rating ranks last.

Sampling: candidate i (0 <= i < N) uses seed `request.seed + i`, so seeds 0..N-1 for the
default seed 0, and the request's temperature, or 0.7 when the request asks for greedy decoding
(N greedy answers would all be the same). Results are reproducible in the same sense as the
wrapped backend's sampling: the same requests in the same batches give the same answers.
Everything else (scoring, raw-text completion) passes through to the wrapped model.

The command-line model options (`--dtype`, `--batch-size`, `--base-url`, ...) configure the
wrapped model; a reward-model scorer takes `--dtype`, `--batch-size` and
`--trust-remote-code`, a judge scorer its defaults.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from evalharness.backends.base import Backend, ForwardingBackend
from evalharness.backends.registry import load_single
from evalharness.backends.spec import (
    ModelSpec,
    parse_model_spec,
    split_best_of_n,
    wrapped_model_spec,
)
from evalharness.engine.requests import (
    FailedResult,
    GenerateRequest,
    GenerateResult,
    Message,
    Request,
    Result,
    RewardRequest,
    RewardResult,
    SamplingParams,
)
from evalharness.store.identity import HasIdentity

#: Sampling temperature for candidates of a request that asks for greedy decoding.
DEFAULT_TEMPERATURE = 0.7
#: The judge prompt a judge scorer rates candidates with (single answer, 1-10).
JUDGE_TEMPLATE = "mt_bench_single"


class Scorer(HasIdentity):
    """Rates a candidate answer to a dialogue; higher is better.

    Like a judge, a scorer only says which requests it needs and how to read their results,
    so the candidates of a whole batch are scored in one batched backend call.
    """

    backend: Backend

    @abstractmethod
    def requests(self, messages: tuple[Message, ...], answer: str) -> list[Request]:
        """What the scorer's backend must answer to rate `answer`."""

    @abstractmethod
    def read(self, messages: tuple[Message, ...], answer: str, results: Sequence[Result]) -> float:
        """The rating, from the results of `requests(messages, answer)`."""


class RewardScorer(Scorer):
    """A reward model's scalar reward for the dialogue ending in the candidate answer."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "reward_model", "backend": self.backend.identity}

    def requests(self, messages: tuple[Message, ...], answer: str) -> list[Request]:
        return [RewardRequest((*messages, Message("assistant", answer)))]

    def read(self, messages: tuple[Message, ...], answer: str, results: Sequence[Result]) -> float:
        (result,) = results
        assert isinstance(result, RewardResult)
        return result.reward


class JudgeScorer(Scorer):
    """An LLM judge's single-answer rating (1-10) of the candidate; a failed parse ranks last."""

    def __init__(self, judge: Any) -> None:
        from evalharness.judges.templates import template_hash

        judge.check_protocol("rating")
        self.judge = judge
        self.backend = judge.backend
        self._template_sha256 = template_hash(JUDGE_TEMPLATE)

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "kind": "judge_rating",
            "judge": self.judge.identity,
            "template_sha256": self._template_sha256,
        }

    def _item(self, messages: tuple[Message, ...], answer: str) -> Any:
        from evalharness.tasks.base import JudgeItem

        return JudgeItem("rating", JUDGE_TEMPLATE, rating_fields(messages, answer))

    def requests(self, messages: tuple[Message, ...], answer: str) -> list[Request]:
        return self.judge.requests_for(self._item(messages, answer))

    def read(self, messages: tuple[Message, ...], answer: str, results: Sequence[Result]) -> float:
        verdict = self.judge.verdict(self._item(messages, answer), results)
        return -math.inf if verdict.get("failure") else float(verdict["rating"])


def rating_fields(messages: tuple[Message, ...], answer: str) -> dict[str, Any]:
    """The rating template's fields for `answer` as the next turn of `messages`.

    One user question, or MT-Bench's question-answer-question shape, fill the template as
    MT-Bench does; any other dialogue (system prompts, longer histories) is shown whole as the
    question, so the judge sees everything the model saw.
    """
    roles = [m.role for m in messages]
    if roles == ["user", "assistant", "user"]:
        return {
            "turn": 2,
            "question_1": messages[0].content,
            "answer_1": messages[1].content,
            "question_2": messages[2].content,
            "answer_2": answer,
            "reference": None,
        }
    if roles == ["user"]:
        question = messages[0].content
    else:
        question = "\n\n".join(f"{m.role}: {m.content}" for m in messages)
    fields = {"question_1": question, "answer_1": answer, "question_2": None, "answer_2": None}
    return {"turn": 1, **fields, "reference": None}


def candidate_sampling(sampling: SamplingParams, index: int) -> SamplingParams:
    """Decoding settings of candidate `index`: sampled (never greedy), seed offset by index."""
    temperature = sampling.temperature if not sampling.greedy else DEFAULT_TEMPERATURE
    return replace(sampling, temperature=temperature, seed=sampling.seed + index)


def best_index(scores: Sequence[float]) -> int:
    """The highest score's index; the first one on ties, NaN ranking last."""
    clean = [-math.inf if math.isnan(s) else s for s in scores]
    return max(range(len(clean)), key=clean.__getitem__)


class BestOfNBackend(ForwardingBackend):
    """Samples N answers from the wrapped model and returns the one the scorer rates highest.

    The wrapped model and a scorer's model generate (or are reward models): `split_best_of_n`
    admits nothing else, so both are built from the registry, and a judge scorer directly as
    an `LLMJudge`; the judge factory, which can build `bon:` judges, is never needed here.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = spec.batch_size
        self.n, scorer_raw, model_raw = split_best_of_n(spec.name)
        # The command line's model options configure the wrapped model.
        self.model_spec = wrapped_model_spec(spec, model_raw)
        self.model = load_single(self.model_spec)
        self.scorer = self._build_scorer(scorer_raw)
        self._identity = {
            "backend": "best_of_n",
            "name": spec.raw,
            "n": self.n,
            "default_temperature": DEFAULT_TEMPERATURE,
            "candidate_seeds": "request seed + i",
            "scorer": self.scorer.identity,
            "model": self.model.identity,
        }

    def _build_scorer(self, raw: str) -> Scorer:
        if raw.startswith("rm:"):
            scorer_spec = parse_model_spec(
                raw,
                dtype=self.spec.dtype,
                device=self.spec.device,
                device_map=self.spec.device_map,
                batch_size=self.spec.batch_size,
                trust_remote_code=self.spec.trust_remote_code,
            )
            return RewardScorer(load_single(scorer_spec))
        return JudgeScorer(self._rating_judge(raw))

    def _rating_judge(self, raw: str) -> Any:
        """The LLM judge `raw` names, as `judges.factory.build_judge` builds it with its
        defaults (the same `auto_mode` and `LLMJudge` defaults): `self` (or the sampled model's
        own spec) reuses the sampled model, another spec loads on `--device`; an `openai:`
        judge reads its rating from text, a local one from probabilities."""
        from evalharness.judges.llm import LLMJudge, auto_mode

        if raw in ("self", self.model_spec.raw):
            judge_spec, backend = self.model_spec, self.model
        else:
            judge_spec = parse_model_spec(raw, device=self.spec.device)
            backend = load_single(judge_spec)
        return LLMJudge(backend, mode=auto_mode(judge_spec.backend), name=judge_spec.raw)

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def device_record(self) -> dict[str, Any] | None:
        """The sampled model's placement, and the scorer's when it is another local model."""
        record = self.model.device_record()
        scorer = self.scorer.backend
        if scorer is not None and scorer is not self.model and scorer.device_record():
            record = {**(record or {}), "scorer": scorer.device_record()}
        return record

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """All N x len(requests) candidates in one call, then all their scores in one call."""
        candidates = [
            GenerateRequest(r.messages, candidate_sampling(r.sampling, i))
            for r in requests
            for i in range(self.n)
        ]
        answers = self.model.generate(candidates)
        scorer_requests = [
            self.scorer.requests(c.messages, a.text)
            for c, a in zip(candidates, answers, strict=True)
        ]
        flat = [r for group in scorer_requests for r in group]
        results = self.scorer.backend.answer(flat) if flat else []
        scores, cursor = [], 0
        for candidate, answer, group in zip(candidates, answers, scorer_requests, strict=True):
            window = results[cursor : cursor + len(group)]
            scores.append(self.scorer.read(candidate.messages, answer.text, window))
            cursor += len(group)
        chosen = []
        for start in range(0, len(candidates), self.n):
            best = best_index(scores[start : start + self.n])
            chosen.append(answers[start + best])
        return chosen

    def forward(self, method: str, requests: Sequence[Any]) -> list[Any]:
        """Everything but chat generation (scoring, raw-text completion) is the model's."""
        return getattr(self.model, method)(requests)

    def answer_tolerant(self, requests: Sequence[Request]) -> list[Result | FailedResult]:
        """Judging through this model: requests that only pass through keep the wrapped
        model's tolerance of passing failures (an API judge's 429s)."""
        if any(isinstance(r, GenerateRequest) for r in requests):
            return list(self.answer(requests))
        return self.model.answer_tolerant(requests)

    def error_counts(self) -> dict[str, int]:
        counts = dict(self.model.error_counts())
        if self.scorer.backend is not self.model:
            for kind, count in self.scorer.backend.error_counts().items():
                counts[kind] = counts.get(kind, 0) + count
        return counts

    def close(self) -> None:
        self.model.close()
        if self.scorer.backend is not self.model:
            self.scorer.backend.close()
