"""The OpenAI-compatible HTTP app for any `hf:` model: routes, errors, auth, and `serve`.

Serving a local checkpoint behind the same API as vLLM or OpenAI lets the `openai:` backend, and
any other OpenAI client (the `openai` package, lm-eval's `local-completions`), evaluate it; it
also lets the tests check the `openai:` backend against the `hf:` one on the same weights, over
real HTTP. Prompts are built with the backend's own chat template and tokenizer and generation
uses the same settings as `HFBackend`, so a greedy answer served here is the answer
`HFBackend.generate` gives.

Handlers never touch the model: they queue work on one `ModelWorker` thread, which batches the
requests that are waiting together (see `worker.py`).

Anyone who can reach the port can use the model, so a host other machines can reach is served
only behind a Bearer key (or when the caller insists, `insecure`); loopback needs none.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import socket
import sys
import time
from types import FrameType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from evalharness.backends.hf import HFBackend
from evalharness.errors import InputError
from evalharness.serve.completions import run_chat, run_completion
from evalharness.serve.schema import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    http_error,
)
from evalharness.serve.streaming import chat_events, completion_events
from evalharness.serve.worker import ModelWorker

#: The highest TCP port number.
MAX_PORT = 65535

#: Answers without a key: liveness probes carry none, and it tells nothing about the model.
HEALTH_PATH = "/health"


def create_app(
    backend: HFBackend,
    model_name: str,
    *,
    api_key: str | None = None,
    max_batch: int = 32,
) -> FastAPI:
    """The FastAPI app serving `backend` as `model_name`; `api_key` makes Bearer auth mandatory.

    `app.state.worker` is the model worker; its `stats` say how requests were batched.
    """
    app = FastAPI(title="evalharness OpenAI-compatible server")
    worker = ModelWorker(backend, max_batch=max_batch)
    app.state.worker = worker
    created = int(time.time())
    _install_error_handlers(app)
    if api_key:
        _install_auth(app, api_key)

    @app.get(HEALTH_PATH)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "evalharness"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(request: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        if request.stream:
            return _sse(chat_events(worker, request, model_name))
        return run_chat(worker, request, model_name)

    @app.post("/v1/completions", response_model=None)
    def completions(request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        if request.stream:
            return _sse(completion_events(worker, request, model_name))
        return run_completion(worker, request, model_name)

    return app


def _sse(events: Any) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every failure answers with OpenAI's error JSON, including 404s and validation errors."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return APIError(400, message, param=field or None).response()

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        message = f"{type(exc).__name__}: {exc}"[:500]
        return APIError(500, message, type_="server_error").response()


def _install_auth(app: FastAPI, api_key: str) -> None:
    """Every route but the health check needs `Authorization: Bearer <api_key>`, else a 401."""
    expected = api_key.encode()

    @app.middleware("http")
    async def require_key(request: Request, call_next: Any) -> Any:
        if request.url.path == HEALTH_PATH:
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Constant time, so response timing does not reveal how much of a guess was right.
        matches = hmac.compare_digest(token.strip().encode(), expected)
        if scheme.lower() != "bearer" or not matches:
            # Never echo what was sent: it may be a real key meant for another server.
            refused = APIError(401, "invalid or missing API key", code="invalid_api_key")
            response = refused.response()
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await call_next(request)


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1: an address no other machine can connect to.

    Any other name counts as reachable: it may resolve to a public interface.
    """
    name = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool) -> str | None:
    """Refuse to serve a reachable host without a key; with `insecure`, the warning to show.

    Checked before the model loads or a port is bound, so a mistaken `--host 0.0.0.0` never
    exposes the model, even briefly.
    """
    if api_key or is_loopback(host):
        return None
    if not insecure:
        raise InputError(
            f"--host {host} can be reached from other machines: pass --api-key-env NAME to "
            "require a key, or --insecure to serve without one"
        )
    return f"serving on {host} without an API key: anyone who can reach it can use the model"


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port`, not yet listening; a one-line `InputError` if it cannot be.

    Bound before the model loads, so a mistyped or busy port fails at once, with the reason,
    instead of a traceback (or uvicorn's log line) after a long load. Until uvicorn listens on
    it, connections are refused, as if nothing were bound.
    """
    if not 1 <= port <= MAX_PORT:
        raise InputError(f"--port {port}: a port is a number from 1 to {MAX_PORT}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a port that a server stopped a moment ago (TIME_WAIT) can be taken again.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"--port {port}: {host}:{port} is already in use") from None
        reason = exc.strerror or str(exc)
        raise InputError(f"--host {host} --port {port}: cannot listen there: {reason}") from None
    return sock


def _stopping_server(config: Any, worker: ModelWorker) -> Any:
    """uvicorn's server, which on SIGINT/SIGTERM also stops the model worker at once.

    uvicorn alone waits for every open request to be answered before it exits, and a request
    waits for its generation to end: Ctrl-C during a long answer took minutes. Shutting the
    worker down ends that generation at its next forward pass and answers its requests with
    a 503, so the server stops within moments. A second Ctrl-C still forces the exit.
    """
    import uvicorn

    class StoppingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            worker.shutdown()
            super().handle_exit(sig, frame)

    return StoppingServer(config)


def serve(
    backend: HFBackend,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    api_key: str | None = None,
    insecure: bool = False,
    max_batch: int = 32,
    sock: socket.socket | None = None,
) -> None:
    """Bind the port, load the weights, then serve until SIGINT/SIGTERM.

    The port is checked first (`bind_port`, or the caller's `sock` from it) and listened on only
    after loading, so a bad checkpoint fails with nothing listening, and the first request is
    not slowed by loading. A host reachable from other machines needs `api_key`, or `insecure`
    (the caller shows `check_exposure`'s warning).
    """
    import uvicorn

    check_exposure(host, api_key, insecure)
    if sock is None:
        sock = bind_port(host, port)
    try:
        backend.model  # noqa: B018 - load now, not on the first request
        app = create_app(backend, model_name, api_key=api_key, max_batch=max_batch)
        server = _stopping_server(uvicorn.Config(app, host=host, port=port), app.state.worker)
        shown = f"[{host}]" if ":" in host else host
        print(
            f"evalharness: serving {model_name} at http://{shown}:{port}/v1 (Ctrl-C to stop)",
            file=sys.stderr,
        )
        # uvicorn re-raises the signal it stopped on once it is done; as `uvicorn.run` does,
        # Ctrl-C is then the normal way to end and not an error.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        sock.close()
