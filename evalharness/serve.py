"""An OpenAI-compatible HTTP server for any `hf:` model.

Serving a local checkpoint behind the same API as vLLM or OpenAI lets the `openai:` backend, and
any other OpenAI client, evaluate it; it also lets the tests check the `openai:` backend against
the `hf:` one on the same weights, over real HTTP. Prompts are built with the backend's own
chat template and tokenizer and generation uses the same settings as `HFBackend`, so a greedy
answer served here is the answer `HFBackend.generate` gives.

The model is not thread-safe: every request runs in FastAPI's threadpool (plain `def`
endpoints) and holds one lock while it touches the tokenizer or the model.

Anyone who can reach the port can use the model, so a host other machines can reach is served
only behind a Bearer key (or when the caller insists, `insecure`); loopback needs none.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from evalharness.backends.base import stop_index
from evalharness.backends.hf import HFBackend
from evalharness.errors import InputError
from evalharness.requests import Message, SamplingParams

MAX_TOP_LOGPROBS = 20
#: Chat requests without max_tokens get the rest of the context, but never more than this.
DEFAULT_CHAT_MAX_TOKENS = 1024
#: The legacy completions API's documented default.
DEFAULT_COMPLETION_MAX_TOKENS = 16
#: Rows of logits materialised at once when scoring (bounded memory for large vocabularies).
LOGPROB_CHUNK = 256
#: Answers without a key: liveness probes carry none, and it tells nothing about the model.
HEALTH_PATH = "/health"


# -- errors ------------------------------------------------------------------------------------
class APIError(Exception):
    """An error answered as OpenAI does, so clients raise their usual typed exceptions."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param


def error_response(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The `{"error": {...}}` body every OpenAI client knows how to parse."""
    body = {"message": message, "type": type_, "code": code, "param": param}
    return JSONResponse(status_code=status, content={"error": body})


# -- request bodies ----------------------------------------------------------------------------
class _Lenient(BaseModel):
    """Unknown fields are ignored: clients send options (user, metadata...) we need not honour."""

    model_config = ConfigDict(extra="ignore")


class ContentPart(_Lenient):
    type: str = "text"
    text: str = ""


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def to_message(self) -> Message:
        """Our Message; text parts are joined and `developer` is the newer name for `system`."""
        if isinstance(self.content, list):
            parts = [p.text for p in self.content if p.type == "text"]
            text = "".join(parts)
        else:
            text = self.content or ""
        role = "system" if self.role == "developer" else self.role
        return Message(role=role, content=text)


class _SamplingRequest(_Lenient):
    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=DEFAULT_COMPLETION_MAX_TOKENS, ge=0)
    echo: bool | None = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, "only a single prompt per request is supported", param="prompt")
        return self.prompt[0]


# -- model work --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability given its prefix, and the most likely alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def generate_ids(
    backend: HFBackend, prompt_ids: list[int], sampling: SamplingParams
) -> tuple[list[int], str]:
    """New token ids (stop token cut) and the finish reason for one unpadded prompt."""
    return backend.generate_ids([prompt_ids], sampling)[0]


def sequence_logprobs(
    backend: HFBackend, ids: list[int], start: int, top_k: int
) -> list[TokenLogprob]:
    """Log-probabilities of `ids[start:]`, each given all tokens before it, in one forward pass.

    Logits are computed as `HFBackend.score` does (decoder hidden states times the LM head in
    float32), so a served echo score equals the local score to float precision.
    """
    import torch

    if start < 1:
        raise ValueError("the first token has no prefix to be scored against")
    if start >= len(ids):
        return []
    model = backend.model
    decoder = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    weight = head.weight.float()
    bias = head.bias.float() if getattr(head, "bias", None) is not None else None
    results: list[TokenLogprob] = []
    with torch.inference_mode():
        hidden = decoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
        predicting = hidden[start - 1 : len(ids) - 1]
        for offset in range(0, predicting.shape[0], LOGPROB_CHUNK):
            rows = predicting[offset : offset + LOGPROB_CHUNK].float()
            logits = rows @ weight.T
            if bias is not None:
                logits += bias
            logprobs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            first = start + offset
            targets = ids[first : first + rows.shape[0]]
            results.extend(_rows_to_logprobs(logprobs, targets, top_k))
    return results


def _rows_to_logprobs(logprobs: Any, targets: list[int], top_k: int) -> list[TokenLogprob]:
    """Per-row target logprob and top-k alternatives (descending) from a `[rows, vocab]` tensor."""
    import torch

    index = torch.tensor(targets, dtype=torch.long, device=logprobs.device)[:, None]
    chosen = logprobs.gather(1, index)[:, 0].tolist()
    if top_k > 0:
        values, indices = logprobs.topk(min(top_k, logprobs.shape[1]), dim=-1)
        tops = [
            tuple(zip(i, v, strict=True))
            for i, v in zip(indices.tolist(), values.tolist(), strict=True)
        ]
    else:
        tops = [() for _ in targets]
    return [
        TokenLogprob(token_id=t, logprob=lp, top=top)
        for t, lp, top in zip(targets, chosen, tops, strict=True)
    ]


def encode_with_offsets(backend: HFBackend, text: str) -> tuple[list[int], list[int]]:
    """Raw-text token ids exactly as `HFBackend.encode(text, templated=False)` gives them, with
    the character offset where each token's text starts.

    Offsets are made contiguous: a token whose span was trimmed of a leading space, or a special
    token reported at (0, 0), starts where the previous token ended, so "tokens starting at or
    after character k" is the continuation after a context of length k.
    """
    tokenizer = backend.tokenizer
    try:
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except NotImplementedError:  # slow tokenizers have no offset mapping
        ids = backend.encode(text, templated=False)
        return ids, decoded_offsets(backend, ids, 0)
    offsets: list[int] = []
    previous_end = 0
    for start, end in encoded["offset_mapping"]:
        offsets.append(previous_end if start == end == 0 else min(start, previous_end))
        previous_end = max(previous_end, end)
    return list(encoded["input_ids"]), offsets


def decoded_offsets(backend: HFBackend, ids: Sequence[int], base: int) -> list[int]:
    """Start offset of each token in `decode(ids)`, shifted by `base` (text before them)."""
    decode = backend.tokenizer.decode
    return [base + len(decode(list(ids[:i]), skip_special_tokens=True)) for i in range(len(ids))]


def token_text(backend: HFBackend, token_id: int) -> str:
    return backend.tokenizer.decode([token_id], skip_special_tokens=False)


# -- one request, end to end ---------------------------------------------------------------------
@dataclass(frozen=True)
class Completion:
    """What the model produced for one request, before it is shaped into JSON."""

    prompt_ids: list[int]
    new_ids: list[int]
    text: str
    finish_reason: str
    #: Start offset of each new token in `text`.
    offsets: list[int]


def complete(
    backend: HFBackend,
    prompt_ids: list[int],
    sampling: SamplingParams,
    stops: Sequence[str],
    *,
    with_offsets: bool = False,
) -> Completion:
    """Generate, decode, and truncate at the first stop string (dropping tokens after it).

    Token offsets cost one decode per token, so they are computed only when a stop string or
    the legacy `text_offset` needs them.
    """
    new_ids, finish = generate_ids(backend, prompt_ids, sampling)
    text = backend.tokenizer.decode(new_ids, skip_special_tokens=True)
    offsets = decoded_offsets(backend, new_ids, 0) if stops or with_offsets else []
    cut = stop_index(text, stops)
    if cut is not None:
        kept = sum(1 for offset in offsets if offset < cut)
        new_ids, offsets, text, finish = new_ids[:kept], offsets[:kept], text[:cut], "stop"
    return Completion(prompt_ids, new_ids, text, finish, offsets)


def check_context(backend: HFBackend, n_prompt: int, max_tokens: int | None) -> int:
    """The number of tokens to generate; 400 when the prompt and answer cannot fit."""
    limit = getattr(backend.model.config, "max_position_embeddings", None)
    if limit is None:
        return max_tokens if max_tokens is not None else DEFAULT_CHAT_MAX_TOKENS
    room = limit - n_prompt
    wanted = max_tokens if max_tokens is not None else min(DEFAULT_CHAT_MAX_TOKENS, room)
    if room < 0 or wanted > room:
        raise APIError(
            400,
            f"this model's maximum context length is {limit} tokens; the prompt has {n_prompt} "
            f"and {wanted} more were requested",
            code="context_length_exceeded",
        )
    return wanted


def usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
    }


def chat_logprobs_content(backend: HFBackend, scored: list[TokenLogprob]) -> list[dict[str, Any]]:
    """`choices[0].logprobs.content` of the chat API: token, logprob, bytes, top alternatives."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = token_text(backend, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return [
        {**entry(s.token_id, s.logprob), "top_logprobs": [entry(i, lp) for i, lp in s.top]}
        for s in scored
    ]


def legacy_logprobs(
    backend: HFBackend, ids: list[int], scored: list[TokenLogprob | None], offsets: list[int]
) -> dict[str, Any]:
    """The completions API's `logprobs` object; None where a token has no prefix to score."""
    return {
        "tokens": [token_text(backend, i) for i in ids],
        "token_logprobs": [s.logprob if s else None for s in scored],
        "top_logprobs": [_top_dict(backend, s.top) if s else None for s in scored],
        "text_offset": offsets,
    }


def _top_dict(backend: HFBackend, top: Sequence[tuple[int, float]]) -> dict[str, float]:
    """`{token: logprob}`; when two ids decode to the same text the likelier one is kept."""
    result: dict[str, float] = {}
    for token_id, logprob in top:
        result.setdefault(token_text(backend, token_id), logprob)
    return result


# -- the app -----------------------------------------------------------------------------------
def _sampling(request: _SamplingRequest, max_tokens: int) -> SamplingParams:
    """OpenAI's defaults (temperature 1, top_p 1) applied; a negative temperature is greedy."""
    temperature = 1.0 if request.temperature is None else max(request.temperature, 0.0)
    top_p = 1.0 if request.top_p is None else request.top_p
    return SamplingParams(
        temperature=temperature, top_p=top_p, max_new_tokens=max_tokens, seed=request.seed or 0
    )


def _check_common(request: _SamplingRequest, model_name: str) -> None:
    if request.model != model_name:
        raise APIError(
            404,
            f"The model `{request.model}` does not exist; this server serves `{model_name}`",
            code="model_not_found",
            param="model",
        )
    if request.n != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    if request.stream:
        raise APIError(400, "streaming is not supported", param="stream")


def _envelope(kind: str, model_name: str, choice: dict[str, Any], use: dict[str, int]) -> dict:
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model_name,
        "choices": [choice],
        "usage": use,
    }


def run_chat(backend: HFBackend, request: ChatCompletionRequest, model_name: str) -> dict:
    """Answer one chat completion request (caller holds the model lock)."""
    _check_common(request, model_name)
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs requires logprobs=true", param="top_logprobs")
    prompt = backend.render_chat([m.to_message() for m in request.messages])
    prompt_ids = backend.encode(prompt, templated=True)
    wanted = request.max_completion_tokens or request.max_tokens
    sampling = _sampling(request, check_context(backend, len(prompt_ids), wanted))
    done = complete(backend, prompt_ids, sampling, request.stop_strings())
    logprobs = None
    if request.logprobs:
        top_k = request.top_logprobs or 0
        scored = sequence_logprobs(backend, prompt_ids + done.new_ids, len(prompt_ids), top_k)
        logprobs = {"content": chat_logprobs_content(backend, scored)}
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": done.text},
        "finish_reason": done.finish_reason,
        "logprobs": logprobs,
    }
    return _envelope(
        "chat.completion", model_name, choice, usage(len(prompt_ids), len(done.new_ids))
    )


def run_completion(backend: HFBackend, request: CompletionRequest, model_name: str) -> dict:
    """Answer one legacy completion request (caller holds the model lock)."""
    _check_common(request, model_name)
    prompt = request.prompt_text()
    prompt_ids, prompt_offsets = encode_with_offsets(backend, prompt)
    if not prompt_ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    sampling = _sampling(request, check_context(backend, len(prompt_ids), request.max_tokens))
    stops = request.stop_strings()
    done = complete(backend, prompt_ids, sampling, stops, with_offsets=request.logprobs is not None)
    text = prompt + done.text if request.echo else done.text
    logprobs = None
    if request.logprobs is not None:
        logprobs = _completion_logprobs(backend, request, prompt, prompt_offsets, done)
    choice = {
        "index": 0,
        "text": text,
        "finish_reason": done.finish_reason,
        "logprobs": logprobs,
    }
    return _envelope(
        "text_completion", model_name, choice, usage(len(prompt_ids), len(done.new_ids))
    )


def _completion_logprobs(
    backend: HFBackend,
    request: CompletionRequest,
    prompt: str,
    prompt_offsets: list[int],
    done: Completion,
) -> dict[str, Any]:
    """Legacy logprobs over the echoed prompt (first token None) and/or the new tokens.

    Offsets index the prompt followed by the completion, as OpenAI's do, with or without echo.
    """
    top_k = request.logprobs or 0
    all_ids = done.prompt_ids + done.new_ids
    first = 1 if request.echo else len(done.prompt_ids)
    scored: list[TokenLogprob | None] = list(sequence_logprobs(backend, all_ids, first, top_k))
    new_offsets = [len(prompt) + offset for offset in done.offsets]
    if request.echo:
        return legacy_logprobs(backend, all_ids, [None, *scored], prompt_offsets + new_offsets)
    return legacy_logprobs(backend, done.new_ids, scored, new_offsets)


def create_app(backend: HFBackend, model_name: str, *, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `backend` as `model_name`; `api_key` makes Bearer auth mandatory."""
    app = FastAPI(title="evalharness OpenAI-compatible server")
    lock = threading.Lock()
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

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatCompletionRequest) -> dict[str, Any]:
        with lock:
            return run_chat(backend, request, model_name)

    @app.post("/v1/completions")
    def completions(request: CompletionRequest) -> dict[str, Any]:
        with lock:
            return run_completion(backend, request, model_name)

    return app


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
) -> None:
    """Load the weights, then serve until interrupted.

    Loading first means a bad checkpoint fails before the port is bound, and the first request
    is not slowed by loading. A host reachable from other machines needs `api_key`, or
    `insecure` (the caller shows `check_exposure`'s warning).
    """
    import uvicorn

    check_exposure(host, api_key, insecure)
    backend.model  # noqa: B018 - load now, not on the first request
    uvicorn.run(create_app(backend, model_name, api_key=api_key), host=host, port=port)
