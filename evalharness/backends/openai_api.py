"""`openai:` backend: any OpenAI-compatible server (OpenAI, vLLM, `evalharness serve`...).

Requests go out concurrently (bounded by `spec.concurrency`) through the official `openai`
client, whose built-in retries with exponential backoff handle 429s, 5xx, timeouts and dropped
connections. The engine calls backends synchronously, so each batch runs in its own event loop.

The API key is read from the environment at call time and is never stored on the backend,
never part of its identity and never part of an error message. `$OPENAI_API_KEY` is sent only
to api.openai.com; any other server gets a key only from a variable named explicitly.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from evalharness.backends.base import Backend, cut_at_stop
from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import (
    CompleteRequest,
    FailedResult,
    GenerateRequest,
    GenerateResult,
    Request,
    Result,
    ScoreRequest,
    ScoreResult,
)
from evalharness.errors import BackendError, InputError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_HOST = "api.openai.com"
#: Read implicitly, and only for OpenAI's own endpoint.
OPENAI_KEY_ENV = "OPENAI_API_KEY"
#: What the client sends when no key is set: local servers accept anything, and the library
#: refuses to start without one.
PLACEHOLDER_KEY = "EMPTY"
MAX_DETAIL = 300

T = TypeVar("T")


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code.

    Uses `asyncio.run` (a fresh loop per call, so any thread works); when the caller is itself
    inside a running loop (a notebook, an async app), the loop runs in a worker thread instead.
    """

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


class OpenAIBackend(Backend):
    """Chat generation and raw-text continuation scoring against an OpenAI-compatible API."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        # Explicit, so the identity names where requests really go (the library would
        # otherwise fall back to $OPENAI_BASE_URL behind our back).
        self.base_url = spec.base_url or DEFAULT_BASE_URL
        self.batch_size = max(1, spec.concurrency) * 4
        #: Some servers reject max_tokens=0; the first 400 switches scoring to 1 for good.
        self._score_max_tokens = 0
        #: Every HTTP attempt by outcome, retries included (the client retries silently).
        self.attempts: Counter[str] = Counter()
        self._api_key()  # a named but unset variable fails now, not after hours of work

    def error_counts(self) -> dict[str, int]:
        counts = {k: v for k, v in sorted(self.attempts.items()) if k.startswith("http_")}
        answered = sum(v for k, v in self.attempts.items() if k != "attempts")
        if self.attempts["attempts"] > answered:
            counts["timeout_or_connection"] = self.attempts["attempts"] - answered
        return counts

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.spec.name!r}, base_url={self.base_url!r})"

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "name": self.spec.raw,
            "model": self.spec.name,
            "base_url": self.base_url,
        }

    # -- plumbing ------------------------------------------------------------------------
    def _api_key(self) -> str:
        return api_key_for(self.base_url, self.spec.api_key_env)

    def _run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run `work(client)` on a client made inside the call's own event loop.

        httpx connections belong to the loop that opened them, so a client never outlives
        the `asyncio.run` that created it. Library errors become our one-line errors.
        """
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient, OpenAIError

        api_key = self._api_key()

        async def main() -> T:
            client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=api_key,
                max_retries=self.spec.max_retries,
                timeout=self.spec.timeout_s,
                http_client=DefaultAsyncHttpxClient(event_hooks=counting_hooks(self.attempts)),
            )
            async with client:
                return await work(client)

        try:
            return run_sync(main)
        except OpenAIError as exc:
            raise self._translate(exc, api_key) from None

    async def _bounded(self, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """All calls concurrently, at most `spec.concurrency` in flight, results in order."""
        semaphore = asyncio.Semaphore(max(1, self.spec.concurrency))

        async def one(call: Callable[[], Awaitable[T]]) -> T:
            async with semaphore:
                return await call()

        tasks = [asyncio.ensure_future(one(c)) for c in calls]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # Stop the rest before the client closes under them; the first error wins.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    # -- calls -------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self.answer(requests)  # type: ignore[return-value]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.answer(requests)  # type: ignore[return-value]

    def answer(self, requests: Sequence[Request]) -> list[Result]:
        return self._answer(requests, tolerant=False)  # type: ignore[return-value]

    def answer_tolerant(self, requests: Sequence[Request]) -> list[Result | FailedResult]:
        return self._answer(requests, tolerant=True)

    def _answer(self, requests: Sequence[Request], tolerant: bool) -> list[Result | FailedResult]:
        for request in requests:
            if isinstance(request, ScoreRequest):
                check_scorable(request)
            elif not isinstance(request, (GenerateRequest, CompleteRequest)):
                raise InputError(f"the openai backend cannot answer {type(request).__name__}")
        if not requests:
            return []
        api_key = self._api_key()

        async def work(client: Any) -> list[Result | FailedResult]:
            calls = [lambda r=r: self._one(client, r, tolerant, api_key) for r in requests]
            return await self._bounded(calls)

        return self._run(work)

    async def _one(
        self, client: Any, request: Request, tolerant: bool, api_key: str
    ) -> Result | FailedResult:
        from openai import APIConnectionError, APIStatusError, APITimeoutError

        try:
            if isinstance(request, GenerateRequest):
                return await self._generate_one(client, request)
            if isinstance(request, CompleteRequest):
                return await self._complete_one(client, request)
            return await self._score_one(client, request)  # type: ignore[arg-type]
        except (APITimeoutError, APIConnectionError, APIStatusError) as exc:
            # Overload and timeouts pass; a refused connection means the endpoint is down,
            # which no amount of carrying on fixes (APITimeoutError subclasses the latter).
            transient = isinstance(exc, APITimeoutError) or (
                isinstance(exc, APIStatusError)
                and (exc.status_code == 429 or exc.status_code >= 500)
            )
            if tolerant and transient:
                return FailedResult(error=str(self._translate(exc, api_key)))
            raise

    async def _generate_one(self, client: Any, request: GenerateRequest) -> GenerateResult:
        sampling = request.sampling
        response = await client.chat.completions.create(
            model=self.spec.name,
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
        )
        if not response.choices:
            raise BackendError(f"openai endpoint {self.base_url} returned no choices")
        choice = response.choices[0]
        used = response.usage
        return GenerateResult(
            # Stripped as HFBackend strips, so both backends give the same text to judges.
            text=(choice.message.content or "").strip(),
            n_prompt_tokens=used.prompt_tokens if used else 0,
            n_generated_tokens=used.completion_tokens if used else 0,
            finish_reason=choice.finish_reason or "stop",
        )

    async def _complete_one(self, client: Any, request: CompleteRequest) -> GenerateResult:
        sampling = request.sampling
        response = await client.completions.create(
            model=self.spec.name,
            prompt=request.prompt,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop=list(request.stop) or None,
        )
        if not response.choices:
            raise BackendError(f"openai endpoint {self.base_url} returned no choices")
        choice = response.choices[0]
        used = response.usage
        text, _ = cut_at_stop(choice.text or "", request.stop)
        return GenerateResult(
            text=text if request.verbatim else text.strip(),
            n_prompt_tokens=used.prompt_tokens if used else 0,
            n_generated_tokens=used.completion_tokens if used else 0,
            finish_reason=choice.finish_reason or "stop",
        )

    # -- scoring -------------------------------------------------------------------------
    async def _score_one(self, client: Any, request: ScoreRequest) -> ScoreResult:
        from openai import BadRequestError

        prompt = request.context + request.continuation
        max_tokens = self._score_max_tokens
        try:
            response = await self._echo(client, prompt, max_tokens)
        except BadRequestError:
            if max_tokens:
                raise
            self._score_max_tokens = 1
            response = await self._echo(client, prompt, 1)
        if not response.choices or response.choices[0].logprobs is None:
            raise BackendError(f"openai endpoint {self.base_url} returned no prompt logprobs")
        n_prompt = response.usage.prompt_tokens if response.usage else None
        boundary = len(request.context.rstrip(" "))
        result = continuation_score(response.choices[0].logprobs, boundary, len(prompt), n_prompt)
        if result is None:
            raise BackendError(
                f"openai endpoint {self.base_url} returned no logprobs for the continuation "
                f"{request.continuation[:40]!r}"
            )
        return result

    async def _echo(self, client: Any, prompt: str, max_tokens: int) -> Any:
        return await client.completions.create(
            model=self.spec.name,
            prompt=prompt,
            max_tokens=max_tokens,
            echo=True,
            logprobs=1,
            temperature=0,
        )

    # -- errors --------------------------------------------------------------------------
    def _translate(self, exc: Exception, api_key: str) -> Exception:
        """A one-line InputError (our request is wrong) or BackendError (the server failed)."""
        from openai import (
            APIConnectionError,
            APIStatusError,
            APITimeoutError,
            AuthenticationError,
            PermissionDeniedError,
        )

        where = f"openai endpoint {self.base_url}"
        retries = f"after {self.spec.max_retries} retries"
        if isinstance(exc, APITimeoutError):
            return BackendError(f"{where} timed out ({self.spec.timeout_s:g} s) {retries}")
        if isinstance(exc, APIConnectionError):
            cause = exc.__cause__ or exc
            detail = scrub(f"{type(cause).__name__}: {cause}", api_key)
            return BackendError(f"{where} unreachable {retries}: {detail}")
        if isinstance(exc, (AuthenticationError, PermissionDeniedError)):
            # The server's message may quote (part of) the key: leave it out entirely.
            refused = key_refused(self.base_url, self.spec.api_key_env, api_key)
            return InputError(f"{where} {refused} (HTTP {exc.status_code})")
        if isinstance(exc, APIStatusError):
            detail = scrub(error_detail(exc), api_key)
            status = exc.status_code
            if status == 404:
                return InputError(
                    f"{where}: model {self.spec.name!r} or route not found (HTTP 404): {detail}"
                )
            if status == 429 or status >= 500:
                return BackendError(f"{where} failed {retries} (HTTP {status}): {detail}")
            return InputError(f"{where} rejected the request (HTTP {status}): {detail}")
        detail = scrub(f"{type(exc).__name__}: {exc}", api_key)
        return BackendError(f"{where} failed: {detail}")


def is_openai(base_url: str) -> bool:
    """True only for https://api.openai.com itself: the one server `$OPENAI_API_KEY` is for.

    The host is compared exactly after parsing, so `api.openai.com.example` or
    `api.openai.com@example` do not pass, and plain http never does.
    """
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return False
    return parts.scheme == "https" and parts.hostname == OPENAI_HOST and port in (None, 443)


def api_key_for(base_url: str, api_key_env: str | None) -> str:
    """The key to send to `base_url`: from the named variable, else `$OPENAI_API_KEY` for
    OpenAI only, else the placeholder.

    Pointing `--base-url` at a local or third-party server must not hand it the user's OpenAI
    key, so that variable is never read implicitly for them. A variable named explicitly must
    hold a key: sending the placeholder instead would only fail later, less clearly.
    """
    if api_key_env is not None:
        value = os.environ.get(api_key_env)
        if not value:
            raise InputError(f"the API key variable ${api_key_env} is not set or is empty")
        return value
    if is_openai(base_url):
        return os.environ.get(OPENAI_KEY_ENV) or PLACEHOLDER_KEY
    return PLACEHOLDER_KEY


def key_refused(base_url: str, api_key_env: str | None, api_key: str) -> str:
    """Why the server refused: which key was sent, never the key itself."""
    if api_key_env is not None:
        return f"rejected the API key from ${api_key_env}"
    if api_key != PLACEHOLDER_KEY:
        return f"rejected the API key from ${OPENAI_KEY_ENV}"
    if is_openai(base_url):
        return (
            f"needs an API key: set ${OPENAI_KEY_ENV} or pass --api-key-env NAME "
            "(--judge-api-key-env NAME for a judge)"
        )
    return (
        f"needs an API key, and ${OPENAI_KEY_ENV} is sent only to {OPENAI_HOST}: name the "
        "variable holding this server's key with --api-key-env NAME (--judge-api-key-env NAME "
        "for a judge)"
    )


def counting_hooks(counts: Counter[str]) -> dict[str, list[Callable[[Any], Awaitable[None]]]]:
    """httpx event hooks that count every HTTP attempt by outcome, retries included.

    The `openai` client retries with backoff on its own and says nothing about it; hooks on its
    HTTP client see each attempt. An attempt with no response timed out or lost its connection.
    """

    async def on_request(request: Any) -> None:
        counts["attempts"] += 1

    async def on_response(response: Any) -> None:
        status = response.status_code
        counts["ok" if status < 400 else f"http_{status}"] += 1

    return {"request": [on_request], "response": [on_response]}


def check_scorable(request: ScoreRequest) -> None:
    """Only raw text can be scored: the server applies its own template to chat, never ours."""
    if request.messages is not None:
        raise InputError(
            "the openai backend cannot score chat-templated contexts (ScoreRequest.messages); "
            "use an hf: model or a raw-text context"
        )
    if not request.continuation:
        raise InputError(f"score request has an empty continuation: {request!r}"[:200])


def continuation_score(
    logprobs: Any, boundary: int, prompt_chars: int, n_prompt_tokens: int | None
) -> ScoreResult | None:
    """Sum the echoed prompt logprobs of tokens starting at or after character `boundary`.

    `boundary` is the context length without trailing spaces, as `HFBackend` splits context
    and continuation. Tokens past the prompt (a generated token when max_tokens had to be 1)
    are skipped by count and by offset; a token without a logprob (the very first) is skipped.
    A position is greedy when its token is at least as likely as the top-1 alternative.
    """
    tokens = logprobs.tokens or []
    values = logprobs.token_logprobs or []
    offsets = logprobs.text_offset or []
    tops = logprobs.top_logprobs or []
    n = min(len(tokens), len(values), len(offsets))
    if n_prompt_tokens is not None:
        n = min(n, n_prompt_tokens)
    total, count, greedy = 0.0, 0, True
    for index in range(n):
        value = values[index]
        if offsets[index] < boundary or offsets[index] >= prompt_chars or value is None:
            continue
        top = tops[index] if index < len(tops) else None
        total += value
        count += 1
        greedy = greedy and bool(top) and value >= max(top.values())
    if count == 0:
        return None
    return ScoreResult(logprob=total, n_tokens=count, is_greedy=greedy)


def error_detail(exc: Any) -> str:
    """The server's own error message when it sent OpenAI-style JSON, else the library's."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:MAX_DETAIL]
        if body.get("message"):
            return str(body["message"])[:MAX_DETAIL]
    return str(getattr(exc, "message", exc))[:MAX_DETAIL]


def scrub(text: str, api_key: str) -> str:
    """Remove the API key from text bound for logs or the terminal."""
    if api_key and api_key != PLACEHOLDER_KEY:
        text = text.replace(api_key, "***")
    return text
