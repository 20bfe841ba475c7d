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

import hmac
import ipaddress
import time
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
    error_response,
)
from evalharness.serve.streaming import chat_events, completion_events
from evalharness.serve.worker import ModelWorker

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
        return error_response(
            exc.status, exc.message, type_=exc.type, code=exc.code, param=exc.param
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return error_response(400, message, param=field or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"unknown route {request.method} {request.url.path}"
        return error_response(exc.status_code, message, code=str(exc.status_code))

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        message = f"{type(exc).__name__}: {exc}"[:500]
        return error_response(500, message, type_="server_error")


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
            response = error_response(401, "invalid or missing API key", code="invalid_api_key")
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


def serve(
    backend: HFBackend,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    api_key: str | None = None,
    insecure: bool = False,
    max_batch: int = 32,
) -> None:
    """Load the weights, then serve until interrupted.

    Loading first means a bad checkpoint fails before the port is bound, and the first request
    is not slowed by loading. A host reachable from other machines needs `api_key`, or
    `insecure` (the caller shows `check_exposure`'s warning).
    """
    import uvicorn

    check_exposure(host, api_key, insecure)
    backend.model  # noqa: B018 - load now, not on the first request
    app = create_app(backend, model_name, api_key=api_key, max_batch=max_batch)
    uvicorn.run(app, host=host, port=port)
