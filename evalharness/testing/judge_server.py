"""A scripted LLM judge behind a real OpenAI-compatible HTTP server.

Why it exists: judge pipelines should be tested and benchmarked against real HTTP without
loading a model or reaching the internet. The server answers like a judge, deterministically,
after a fixed latency, and injects faults (429s, 500s, hangs, answers with no verdict) at chosen
rates, so a test can assert exactly what a pipeline did, and a benchmark measures the pipeline
rather than a model. Users can point a judge at it for CI dry runs of a whole evaluation. What
it answers and when it fails is the script in `scripted_judge.py`; this module is the HTTP.

`POST /v1/chat/completions` takes OpenAI's chat format; options such as `seed`,
`temperature`, `top_p`, `max_tokens` or `logprobs` are accepted and ignored.

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
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from evalharness.serve.schema import APIError, ContentPart, Lenient, content_text, http_error
from evalharness.testing.scripted_judge import (
    GARBAGE_TEXT,
    MODEL_NAME,
    ScriptedJudge,
    ScriptedJudgeConfig,
    body_digest,
    judge_answer,
)

#: Sent with every 429/500 so clients retry at once (see the module docstring).
RETRY_NOW = {"retry-after": "0", "retry-after-ms": "1"}


class _ChatMessage(Lenient):
    """A message of any role: a script has no use for checking them."""

    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        return content_text(self.content)


class _ChatRequest(Lenient):
    model: str = MODEL_NAME
    messages: list[_ChatMessage]
    n: int = 1
    stream: bool = False


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

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]

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
            return APIError(400, f"invalid chat completion request: {exc}"[:500]).response()
        if chat.stream or chat.n < 1:
            judge.reject()
            return APIError(400, "streaming and n < 1 are not supported").response()
        await judge.wait_for_turn()
        attempt, outcome = judge.admit(body_digest(payload))
        if outcome == "429":
            message = f"scripted rate limit (attempt {attempt})"
            return APIError(429, message, type_="rate_limit_exceeded").response(RETRY_NOW)
        if outcome == "500":
            message = f"scripted server error (attempt {attempt})"
            return APIError(500, message, type_="server_error").response(RETRY_NOW)
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
