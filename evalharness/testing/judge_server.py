"""A scripted LLM judge behind a real OpenAI-compatible HTTP server.

Why it exists: judge pipelines are mostly plumbing around an HTTP API (concurrency, retries,
caching, parsing, failure accounting), and that plumbing should be tested and benchmarked
against real HTTP without loading a model or reaching the internet. This server answers like a
judge, deterministically, after a fixed latency, and injects faults (429s, 500s, hangs, answers
with no verdict) at chosen rates, so a test can assert exactly what a pipeline did, and a
benchmark measures the pipeline rather than a model. Users can point a judge at it for CI dry
runs of a whole evaluation.

What it answers (`POST /v1/chat/completions`, OpenAI chat format; options such as `seed`,
`temperature`, `top_p`, `max_tokens` or `logprobs` are accepted and ignored). The prompt is the
system messages plus the last user message:

* a rating prompt (it contains `[[rating]]` or `Rating: [[`) gets `... Rating: [[N]]` with
  `N = 1 + sha256(last user message) mod 10`;
* a pairwise prompt (it contains `[[A]]`) gets `... [[A]]`, `[[B]]` or `[[C]]` (a tie). With the
  default rule, `longer`, the verdict goes to the longer answer (the texts between
  `[The Start of Assistant A's Answer]` and `[The End of Assistant A's Answer]`, likewise for B,
  stripped; for two-turn prompts, between `<|The Start of Assistant A's Conversation with
  User|>` and its end marker), and equal lengths tie. The rule depends on content only, so
  swapping A and B swaps the verdict: a position-consistency check must find no bias. The
  rules `first` and `second` always pick A or B, a maximally position-biased judge the same
  check must catch. When the markers are missing, the parity of the same hash picks A (even)
  or B (odd);
* anything else gets `OK`.

How faults are decided. A request's body is parsed and re-serialised canonically (sorted keys),
and its sha256 is its identity; the server counts how often it has seen each identity, so the
`k`-th arrival of the same body has attempt index `k` (0-based). The outcome is a pure function
of (seed, body hash, attempt), see `decide_outcome`: a uniform draw from sha256 of the three
falls into consecutive bands of width `rate_limit_rate` (429), `server_error_rate` (500),
`timeout_rate` (a hang of `timeout_sleep_s` before answering, so the client times out first),
and, on attempt 0 only, `garbage_rate` (HTTP 200 with `I cannot decide.`, no verdict); the rest
is a normal answer. Faults happen only on attempts 0 and 1, so a client that retries an
identical request at least twice always gets its answer in the end, while a client that does
not retry, or changes the request between attempts, sees the failures. Identical requests from
different callers share the count, as they would share a cache key.

Errors are OpenAI's `{"error": {...}}` JSON with `retry-after: 0`; they also carry
`retry-after-ms: 1`, because the official `openai` client ignores a zero delay and falls back
to its exponential backoff (0.5 s and up), which would make fault tests slow. Latency is an
`asyncio.sleep` for every answered request (not for the immediate 429/500), so concurrent
requests overlap as they do on a real server.

With `hold_after=N` the server answers N requests and then holds every later one until
`app.state.judge.release()`: a test can stop a client at a known point (to interrupt it, say)
by waiting for that state instead of guessing at timings.

`GET /stats` (and `app.state.judge.stats()` in Python) counts requests, outcomes, distinct
bodies, the requests held now and the most requests answered at once (`peak_in_flight`).
`GET /v1/models` and `GET /health` are there for clients that probe first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

#: The model id listed at /v1/models; requests may name any model and get it echoed back.
MODEL_NAME = "scripted-judge"
OK_TEXT = "OK"
GARBAGE_TEXT = "I cannot decide."
#: Faults are injected only on attempts 0 .. FAULTY_ATTEMPTS - 1 of the same body.
FAULTY_ATTEMPTS = 2
#: Keys of the outcome counters; `invalid` counts malformed requests (answered 400).
OUTCOMES = ("ok", "garbage", "429", "500", "timeout", "invalid")
A_START, A_END = "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]"
B_START, B_END = "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]"
#: Two-turn pairwise prompts (MT-Bench style) wrap whole conversations instead.
A_TURNS = (
    "<|The Start of Assistant A's Conversation with User|>",
    "<|The End of Assistant A's Conversation with User|>",
)
B_TURNS = (
    "<|The Start of Assistant B's Conversation with User|>",
    "<|The End of Assistant B's Conversation with User|>",
)
#: Sent with every 429/500 so clients retry at once (see the module docstring).
RETRY_NOW = {"retry-after": "0", "retry-after-ms": "1"}
#: How often a hanging (timeout) request checks whether the server is shutting down.
_HANG_POLL_S = 0.05

Outcome = Literal["ok", "garbage", "429", "500", "timeout"]
PairwiseRule = Literal["longer", "first", "second"]


@dataclass(frozen=True)
class ScriptedJudgeConfig:
    """Latency, fault rates and verdict rule of a scripted judge.

    Rates are per-attempt probabilities; they are bands of one draw, so together they must not
    exceed 1. `seed` changes which bodies fail without changing the rates.
    """

    latency_s: float = 0.0
    garbage_rate: float = 0.0
    rate_limit_rate: float = 0.0
    server_error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_sleep_s: float = 30.0
    seed: int = 0
    pairwise_rule: PairwiseRule = "longer"
    #: Answer this many requests, then hold every later one until `ScriptedJudge.release()`.
    hold_after: int | None = None

    def __post_init__(self) -> None:
        rates = {
            "garbage_rate": self.garbage_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "server_error_rate": self.server_error_rate,
            "timeout_rate": self.timeout_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates must sum to at most 1, got {sum(rates.values()):g}")
        if self.hold_after is not None and self.hold_after < 0:
            raise ValueError(f"hold_after must not be negative, got {self.hold_after}")
        if self.latency_s < 0 or self.timeout_sleep_s < 0:
            raise ValueError("latency_s and timeout_sleep_s must not be negative")
        if self.pairwise_rule not in ("longer", "first", "second"):
            raise ValueError(f"pairwise_rule must be longer, first or second: {self.pairwise_rule}")


# -- the script --------------------------------------------------------------------------------
def _text_hash(text: str) -> int:
    """A hash that is stable across processes and Python versions (unlike `hash()`)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")


def scripted_rating(user_text: str) -> int:
    """The rating, 1 to 10, given to a prompt whose last user message is `user_text`."""
    return 1 + _text_hash(user_text) % 10


def _between(text: str, start: str, end: str) -> str | None:
    begin = text.find(start)
    if begin < 0:
        return None
    begin += len(start)
    stop = text.find(end, begin)
    return None if stop < 0 else text[begin:stop].strip()


def _answer(text: str, *markers: tuple[str, str]) -> str | None:
    """The text inside the first pair of markers present (an empty answer still counts)."""
    for start, end in markers:
        found = _between(text, start, end)
        if found is not None:
            return found
    return None


def pairwise_verdict(user_text: str, rule: PairwiseRule = "longer") -> Literal["A", "B", "C"]:
    """`A`, `B` or `C` (tie) for a pairwise prompt, by the rule described in the module doc."""
    if rule == "first":
        return "A"
    if rule == "second":
        return "B"
    answer_a = _answer(user_text, (A_START, A_END), A_TURNS)
    answer_b = _answer(user_text, (B_START, B_END), B_TURNS)
    if answer_a is None or answer_b is None:
        return "A" if _text_hash(user_text) % 2 == 0 else "B"
    if len(answer_a) == len(answer_b):
        return "C"
    return "A" if len(answer_a) > len(answer_b) else "B"


def judge_answer(system_text: str, user_text: str, rule: PairwiseRule = "longer") -> str:
    """The scripted judge's full answer to a system prompt and last user message."""
    prompt = f"{system_text}\n{user_text}"
    if "[[rating]]" in prompt or "Rating: [[" in prompt:
        return f"Explanation: a scripted verdict. Rating: [[{scripted_rating(user_text)}]]"
    if "[[A]]" in prompt:
        return f"Explanation: a scripted verdict. [[{pairwise_verdict(user_text, rule)}]]"
    return OK_TEXT


def body_digest(payload: Any) -> str:
    """sha256 of a JSON body serialised canonically, so key order does not make a new body."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fault_draw(seed: int, digest: str, attempt: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, body hash, attempt)."""
    key = hashlib.sha256(f"{seed}\0{digest}\0{attempt}".encode()).digest()
    return int.from_bytes(key[:8], "big") / 2.0**64


def decide_outcome(config: ScriptedJudgeConfig, digest: str, attempt: int) -> Outcome:
    """What the `attempt`-th arrival (0-based) of the body with hash `digest` gets.

    Attempts from FAULTY_ATTEMPTS on always succeed; garbage is possible on attempt 0 only.
    """
    if attempt >= FAULTY_ATTEMPTS:
        return "ok"
    draw = fault_draw(config.seed, digest, attempt)
    bands: tuple[tuple[Outcome, float], ...] = (
        ("429", config.rate_limit_rate),
        ("500", config.server_error_rate),
        ("timeout", config.timeout_rate),
        ("garbage", config.garbage_rate if attempt == 0 else 0.0),
    )
    edge = 0.0
    for outcome, rate in bands:
        edge += rate
        if draw < edge:
            return outcome
    return "ok"


class ScriptedJudge:
    """The config, the per-body attempt counts and the counters of one server (`app.state.judge`).

    Endpoints run on the server's event loop while tests read `stats()` from their own thread,
    hence the lock.
    """

    def __init__(self, config: ScriptedJudgeConfig) -> None:
        self.config = config
        #: Set when the server is stopping, so hanging requests end instead of delaying it.
        self.closing = False
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._requests = 0
        self._admitted = 0
        self._held = 0
        self._released = False
        self._in_flight = 0
        self._peak_in_flight = 0

    def admit(self, digest: str) -> tuple[int, Outcome]:
        """Record one arrival of a body; its attempt index and decided outcome."""
        with self._lock:
            attempt = self._seen.get(digest, 0)
            self._seen[digest] = attempt + 1
            outcome = decide_outcome(self.config, digest, attempt)
            self._requests += 1
            self._counts[outcome] += 1
        return attempt, outcome

    async def wait_for_turn(self) -> None:
        """Return at once for the first `hold_after` requests; hold later ones until `release()`."""
        limit = self.config.hold_after
        with self._lock:
            self._admitted += 1
            if limit is None or self._admitted <= limit or self._released:
                return
            self._held += 1
        try:
            while not (self._released or self.closing):
                await asyncio.sleep(_HANG_POLL_S)
        finally:
            with self._lock:
                self._held -= 1

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Count a request as in flight while it is being answered (for `peak_in_flight`)."""
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def release(self) -> None:
        """Let held requests, and every later one, through."""
        with self._lock:
            self._released = True

    def reject(self) -> None:
        """Record one malformed request."""
        with self._lock:
            self._requests += 1
            self._counts["invalid"] += 1

    def stats(self) -> dict[str, Any]:
        """The same counters `GET /stats` answers."""
        with self._lock:
            return {
                "requests": self._requests,
                "outcomes": dict(self._counts),
                "distinct_bodies": len(self._seen),
                "held": self._held,
                "peak_in_flight": self._peak_in_flight,
            }

    async def hang(self, seconds: float) -> None:
        """Sleep like a stuck upstream, but stop early once the server is closing."""
        deadline = time.monotonic() + seconds
        while not self.closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, _HANG_POLL_S))


# -- HTTP --------------------------------------------------------------------------------------
class _Lenient(BaseModel):
    """Unknown fields are ignored: judges send sampling options a script has no use for."""

    model_config = ConfigDict(extra="ignore")


class _Part(_Lenient):
    type: str = "text"
    text: str = ""


class _ChatMessage(_Lenient):
    role: str
    content: str | list[_Part] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if part.type == "text")
        return self.content or ""


class _ChatRequest(_Lenient):
    model: str = MODEL_NAME
    messages: list[_ChatMessage]
    n: int = 1
    stream: bool = False


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"message": message, "type": type_, "param": None, "code": code}
    return JSONResponse(status_code=status, content={"error": body}, headers=headers)


def _completion(request: _ChatRequest, text: str) -> dict[str, Any]:
    """A ChatCompletion body; token counts are whitespace words, a stand-in for a tokenizer."""
    prompt_tokens = sum(len(message.text().split()) for message in request.messages)
    completion_tokens = len(text.split()) * request.n
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None,
        }
        for index in range(request.n)
    ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _prompt_parts(request: _ChatRequest) -> tuple[str, str]:
    """The system messages joined, and the last user message."""
    system = "\n".join(m.text() for m in request.messages if m.role in ("system", "developer"))
    users = [m.text() for m in request.messages if m.role == "user"]
    return system, users[-1] if users else ""


def create_judge_app(config: ScriptedJudgeConfig | None = None) -> FastAPI:
    """The scripted judge as a FastAPI app; its counters are at `app.state.judge`."""
    config = config or ScriptedJudgeConfig()
    judge = ScriptedJudge(config)
    app = FastAPI(title="evalharness scripted judge")
    app.state.judge = judge
    created = int(time.time())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"unknown route {request.method} {request.url.path}"
        return _error(exc.status_code, message, code=str(exc.status_code))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        card = {"id": MODEL_NAME, "object": "model", "created": created, "owned_by": "evalharness"}
        return {"object": "list", "data": [card]}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return judge.stats()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            payload = json.loads(await request.body())
            chat = _ChatRequest.model_validate(payload)
        except (ValueError, ValidationError) as exc:  # bad JSON or a body of the wrong shape
            judge.reject()
            return _error(400, f"invalid chat completion request: {exc}"[:500])
        if chat.stream or chat.n < 1:
            judge.reject()
            return _error(400, "streaming and n < 1 are not supported")
        await judge.wait_for_turn()
        attempt, outcome = judge.admit(body_digest(payload))
        if outcome == "429":
            message = f"scripted rate limit (attempt {attempt})"
            return _error(429, message, type_="rate_limit_exceeded", headers=RETRY_NOW)
        if outcome == "500":
            message = f"scripted server error (attempt {attempt})"
            return _error(500, message, type_="server_error", headers=RETRY_NOW)
        with judge.answering():
            if outcome == "timeout":
                await judge.hang(config.timeout_sleep_s)
            elif config.latency_s > 0:
                await asyncio.sleep(config.latency_s)
        if outcome == "garbage":
            text = GARBAGE_TEXT
        else:
            text = judge_answer(*_prompt_parts(chat), config.pairwise_rule)
        return _completion(chat, text)

    return app


# -- running it in-process -----------------------------------------------------------------------
def _bind(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn, so no other process can take the port before it listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _wait_healthy(root: str, thread: threading.Thread, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError("the scripted judge server stopped before it was ready")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{root}/health").status_code == 200:
                    return
            time.sleep(0.02)
    raise RuntimeError(f"the scripted judge server did not answer {root}/health in {timeout_s} s")


@contextlib.contextmanager
def running_judge_server(
    config: ScriptedJudgeConfig | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    app: FastAPI | None = None,
) -> Iterator[str]:
    """Serve a scripted judge from a background thread; yields the base URL (`.../v1`).

    `port=None` takes a free port. Pass `app` (from `create_judge_app`) instead of `config` to
    read `app.state.judge` directly. On exit, hanging requests are cut short and uvicorn is
    stopped and joined, so the port is free again when the block ends.
    """
    if app is not None and config is not None:
        raise ValueError("pass either config or app, not both")
    app = app if app is not None else create_judge_app(config)
    judge: ScriptedJudge | None = getattr(app.state, "judge", None)
    sock = _bind(host, port or 0)
    bound_port = sock.getsockname()[1]
    url_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    root = (
        f"http://[{url_host}]:{bound_port}"
        if ":" in url_host
        else f"http://{url_host}:{bound_port}"
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="scripted-judge", daemon=True
    )
    thread.start()
    try:
        _wait_healthy(root, thread)
        yield f"{root}/v1"
    finally:
        if judge is not None:
            judge.closing = True
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- running it as its own process ----------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """`python -m evalharness.testing.judge_server --port 8001 --latency-s 0.05` (CI dry runs)."""
    import argparse

    parser = argparse.ArgumentParser(description="A scripted OpenAI-compatible judge server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--garbage-rate", type=float, default=0.0)
    parser.add_argument("--rate-limit-rate", type=float, default=0.0)
    parser.add_argument("--server-error-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument("--pairwise-rule", default="longer", choices=["longer", "first", "second"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = ScriptedJudgeConfig(
        latency_s=args.latency_s,
        garbage_rate=args.garbage_rate,
        rate_limit_rate=args.rate_limit_rate,
        server_error_rate=args.server_error_rate,
        timeout_rate=args.timeout_rate,
        pairwise_rule=args.pairwise_rule,
        seed=args.seed,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_judge_app(config), log_level="warning", lifespan="off")
    )
    server.run(sockets=[_bind(args.host, args.port)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
