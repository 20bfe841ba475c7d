"""The scripted judge server, over real HTTP with the official `openai` client (no mocks).

Judge pipelines are tested and benchmarked against this server, so its promises are checked
here: deterministic verdicts, a position-independent pairwise rule, concurrent latency, and
faults that retries always get past.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cli_helpers import MINI, run_cli, write_lines

from evalharness.testing.judge_server import create_judge_app, running_judge_server
from evalharness.testing.scripted_judge import (
    A_END,
    A_START,
    B_END,
    B_START,
    FAULTY_ATTEMPTS,
    GARBAGE_TEXT,
    MODEL_NAME,
    ScriptedJudgeConfig,
    decide_outcome,
)

RATING_SYSTEM = 'Rate the answer from 1 to 10 in exactly this format: "Rating: [[5]]".'
PAIRWISE_SYSTEM = 'Reply "[[A]]" if A is better, "[[B]]" if B is better, "[[C]]" for a tie.'


def client(base_url: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", **options)


def ask(
    judge: openai.OpenAI, system: str, user: str, **extra: Any
) -> openai.types.chat.ChatCompletion:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return judge.chat.completions.create(model="gpt-judge", messages=messages, **extra)


def pairwise_prompt(answer_a: str, answer_b: str) -> str:
    return f"[Question]\nWhy?\n\n{A_START}\n{answer_a}\n{A_END}\n\n{B_START}\n{answer_b}\n{B_END}"


def parse_rating(text: str) -> int | None:
    """The `[[N]]` a judge pipeline reads (local, so this test does not depend on `judges`)."""
    match = re.search(r"\[\[(\d+)\]\]", text)
    return int(match.group(1)) if match else None


def verdict(text: str) -> str | None:
    """`A`, `B` or `C` from the one `[[X]]` in a pairwise answer."""
    match = re.search(r"\[\[([ABC])\]\]", text)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_judge_server(ScriptedJudgeConfig()) as url:
        yield url


def test_rating_answers_parse_and_are_deterministic(base_url: str) -> None:
    judge = client(base_url, max_retries=0, timeout=10)
    users = [f"[Question]\nQ{i}\n\n[The Assistant's Answer]\nA{i}" for i in range(12)]
    options = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 3, "logprobs": True}
    first = [ask(judge, RATING_SYSTEM, user, **options) for user in users]
    again = [ask(judge, RATING_SYSTEM, user) for user in users]
    for user, response, repeat in zip(users, first, again, strict=True):
        choice = response.choices[0]
        assert choice.message.role == "assistant" and choice.finish_reason == "stop"
        assert response.model == "gpt-judge" and response.object == "chat.completion"
        assert response.usage is not None and response.usage.total_tokens == (
            response.usage.prompt_tokens + response.usage.completion_tokens
        )
        digest = hashlib.sha256(user.encode()).hexdigest()
        assert parse_rating(choice.message.content or "") == 1 + int(digest, 16) % 10
        assert repeat.choices[0].message.content == choice.message.content
    assert len({parse_rating(r.choices[0].message.content or "") for r in first}) > 3
    # The MT-Bench wording with "[[rating]]" in the user turn counts as a rating prompt too.
    mt_bench = ask(judge, "Be fair.", 'Use the format "[[rating]]". Answer: 4').choices[0]
    assert parse_rating(mt_bench.message.content or "") is not None
    assert ask(judge, "Be fair.", "Hello").choices[0].message.content == "OK"


def test_pairwise_prefers_the_longer_answer_in_either_position(base_url: str) -> None:
    judge = client(base_url, max_retries=0, timeout=10)
    long, short = "A careful, complete and detailed answer.", "Short."

    def pick(user: str) -> str:
        return verdict(ask(judge, PAIRWISE_SYSTEM, user).choices[0].message.content or "")

    assert pick(pairwise_prompt(long, short)) == "A"
    assert pick(pairwise_prompt(short, long)) == "B"
    assert pick(pairwise_prompt("same", "four")) == "C"
    assert pick(pairwise_prompt("", "x")) == "B"  # an empty answer is still an answer
    two_turns = (
        "<|The Start of Assistant A's Conversation with User|>\n### Assistant A:\nok\n"
        "<|The End of Assistant A's Conversation with User|>\n\n"
        "<|The Start of Assistant B's Conversation with User|>\n### Assistant B:\nbetter\n"
        "<|The End of Assistant B's Conversation with User|>"
    )
    assert pick(two_turns) == "B"
    without_markers = [pick(f"Compare answer one and answer two, case {i}.") for i in range(10)]
    assert set(without_markers) == {"A", "B"}


def test_position_biased_rule_always_picks_a() -> None:
    with running_judge_server(ScriptedJudgeConfig(pairwise_rule="first")) as url:
        judge = client(url, max_retries=0, timeout=10)
        for user in (pairwise_prompt("long answer", "x"), pairwise_prompt("x", "long answer")):
            assert (
                verdict(ask(judge, PAIRWISE_SYSTEM, user).choices[0].message.content or "") == "A"
            )


def test_models_health_stats_and_errors(base_url: str) -> None:
    assert [m.id for m in client(base_url).models.list()] == [MODEL_NAME]
    root = base_url.removesuffix("/v1")
    with httpx.Client(trust_env=False, timeout=10) as http:
        assert http.get(f"{root}/health").json() == {"status": "ok"}
        bad = http.post(f"{base_url}/chat/completions", json={"messages": "nope"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        missing = http.get(f"{base_url}/nope")
        assert missing.status_code == 404 and "error" in missing.json()
        stats = http.get(f"{root}/stats").json()
    assert stats["outcomes"]["invalid"] >= 1
    assert stats["requests"] == sum(stats["outcomes"].values())


@pytest.mark.timing
def test_latency_overlaps_across_concurrent_requests() -> None:
    """The latency of one request does not hold the others up: they are answered at once.

    Counted by the server (requests inside their latency together), not timed, so a loaded
    machine cannot fail it: a 2 s latency leaves the burst ample time to arrive.
    """

    async def burst(url: str) -> None:
        judge = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        await asyncio.gather(
            *(
                judge.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": f"request {i}"}],
                )
                for i in range(20)
            )
        )
        await judge.close()

    app = create_judge_app(ScriptedJudgeConfig(latency_s=2.0))
    with running_judge_server(app=app) as url:
        asyncio.run(burst(url))
    stats = app.state.judge.stats()
    assert stats["outcomes"]["ok"] == 20
    assert stats["peak_in_flight"] >= 10  # serial answers would never exceed 1


@pytest.mark.timing
def test_faults_are_retried_until_every_request_succeeds() -> None:
    config = ScriptedJudgeConfig(
        rate_limit_rate=0.3, server_error_rate=0.3, timeout_rate=0.3, timeout_sleep_s=30.0
    )
    app = create_judge_app(config)
    users = [f"[Question]\nQ{i}\n\n[The Assistant's Answer]\nA{i}" for i in range(40)]

    async def judge_all(url: str) -> list[float | None]:
        # Hangs last 30 s, so the client's 2 s timeout tells them apart from answers however
        # loaded the machine; a retried answer would break the exact counts below.
        judge = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=3, timeout=2.0)

        async def one(user: str) -> float | None:
            messages = [
                {"role": "system", "content": RATING_SYSTEM},
                {"role": "user", "content": user},
            ]
            response = await judge.chat.completions.create(model="m", messages=messages)
            return parse_rating(response.choices[0].message.content or "")

        ratings = await asyncio.gather(*(one(user) for user in users))
        await judge.close()
        return list(ratings)

    with running_judge_server(app=app) as url:
        ratings = asyncio.run(judge_all(url))
        with httpx.Client(trust_env=False, timeout=10) as http:
            stats = http.get(f"{url.removesuffix('/v1')}/stats").json()
        closing = time.monotonic()
    assert time.monotonic() - closing < 10  # hanging handlers (30 s) do not hold shutdown up
    assert all(rating is not None for rating in ratings)
    outcomes = stats["outcomes"]
    assert outcomes["ok"] == stats["distinct_bodies"] == 40
    assert outcomes["429"] > 0 and outcomes["500"] > 0 and outcomes["timeout"] > 0
    assert outcomes["garbage"] == outcomes["invalid"] == 0
    assert stats["requests"] == sum(outcomes.values()) <= 40 * (FAULTY_ATTEMPTS + 1)
    assert app.state.judge.stats() == stats


def test_garbage_only_on_the_first_attempt_of_a_body() -> None:
    with running_judge_server(ScriptedJudgeConfig(garbage_rate=1.0)) as url:
        judge = client(url, max_retries=0, timeout=10)
        first = ask(judge, RATING_SYSTEM, "Answer: 42").choices[0].message.content or ""
        second = ask(judge, RATING_SYSTEM, "Answer: 42").choices[0].message.content or ""
        other = ask(judge, RATING_SYSTEM, "Answer: 43").choices[0].message.content or ""
    assert first == other == GARBAGE_TEXT and parse_rating(first) is None
    assert parse_rating(second) is not None


def test_fault_decisions_are_pure_and_match_the_rates() -> None:
    config = ScriptedJudgeConfig(
        garbage_rate=0.1, rate_limit_rate=0.2, server_error_rate=0.2, timeout_rate=0.2
    )
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    first = [decide_outcome(config, d, 0) for d in digests]
    second = [decide_outcome(config, d, 1) for d in digests]
    assert first == [decide_outcome(config, d, 0) for d in digests]
    for outcome, rate in (("429", 0.2), ("500", 0.2), ("timeout", 0.2), ("garbage", 0.1)):
        assert abs(first.count(outcome) / len(digests) - rate) < 0.03
    assert "garbage" not in second and abs(second.count("ok") / len(digests) - 0.4) < 0.03
    assert all(decide_outcome(config, d, FAULTY_ATTEMPTS) == "ok" for d in digests)
    reseeded = ScriptedJudgeConfig(**{**config.__dict__, "seed": 1})
    assert [decide_outcome(reseeded, d, 0) for d in digests] != first
    with pytest.raises(ValueError, match="sum to at most 1"):
        ScriptedJudgeConfig(garbage_rate=0.5, timeout_rate=0.6)


def test_server_stops_on_exit() -> None:
    with running_judge_server() as url:
        root = url.removesuffix("/v1")
        assert httpx.get(f"{root}/health", timeout=5, trust_env=False).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{root}/health", timeout=2, trust_env=False)


def test_openai_key_never_goes_to_a_judge_base_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `openai:` judge at `--judge-base-url` gets a placeholder, not `$OPENAI_API_KEY`."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-judge-test")
    app = create_judge_app()
    received: list[str] = []

    @app.middleware("http")
    async def record(request: Any, call_next: Any) -> Any:
        if request.url.path.startswith("/v1/"):  # not the harness's own /health polls
            received.append(request.headers.get("authorization", ""))
        return await call_next(request)

    rows = write_lines(
        tmp_path / "rows.jsonl", ['{"id": "1", "prompt": "Hi?", "completion": "Hello."}']
    )
    monkeypatch.setenv("MY_JUDGE_KEY", "judge-key-123")
    with running_judge_server(app=app) as url:
        judge = ["--judge", "openai:scripted", "--judge-base-url", url, "--input", str(rows)]
        code, out, err = run_cli(capsys, "judge", *judge, "--json")
        assert code == 0, err
        assert received and set(received) == {"Bearer EMPTY"}
        assert "sk-secret" not in out + err
        # Named explicitly, a key goes to any judge endpoint (`run` passes it the same way).
        received.clear()
        named = [*judge, "--judge-api-key-env", "MY_JUDGE_KEY"]
        code, out, err = run_cli(capsys, "judge", *named, "--json")
        assert code == 0, err
        assert received and set(received) == {"Bearer judge-key-123"}
        assert "judge-key-123" not in out + err


def test_run_sends_the_named_key_to_its_judge_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --judge-api-key-env` reaches the judge; the model at `--base-url` gets none."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-run-test")
    monkeypatch.setenv("MY_JUDGE_KEY", "judge-key-456")
    app = create_judge_app()
    received: list[str] = []

    @app.middleware("http")
    async def record(request: Any, call_next: Any) -> Any:
        if request.url.path.startswith("/v1/"):
            received.append(request.headers.get("authorization", ""))
        return await call_next(request)

    with running_judge_server(app=app) as url:
        model = ["--model", "openai:scripted", "--base-url", url]
        # Another name than the model's: the same spec would reuse the model as its own judge.
        judge = ["--judge", "openai:grader", "--judge-base-url", url, "--judge-mode", "text"]
        code, out, err = run_cli(
            capsys,
            "run",
            *model,
            *MINI,
            "--limit",
            "1",
            *judge,
            "--judge-api-key-env",
            "MY_JUDGE_KEY",
            "--store",
            str(tmp_path / "runs.sqlite"),
            "--json",
        )
    assert code == 0, err
    assert set(received) == {"Bearer EMPTY", "Bearer judge-key-456"}
    assert "judge-key-456" not in out + err and "sk-secret" not in out + err
