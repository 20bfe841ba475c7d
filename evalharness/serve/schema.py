"""The OpenAI API's request bodies and error shape, as the server accepts and answers them."""

from __future__ import annotations

from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from evalharness.engine.requests import Message

MAX_TOP_LOGPROBS = 20
#: Most choices one request may ask for (OpenAI's own limit is 128).
MAX_N = 64
#: Chat requests without max_tokens get the rest of the context, but never more than this.
DEFAULT_CHAT_MAX_TOKENS = 1024
#: The legacy completions API's documented default.
DEFAULT_COMPLETION_MAX_TOKENS = 16


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

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The `{"error": {...}}` body every OpenAI client knows how to parse."""
        body = {"message": self.message, "type": self.type, "code": self.code, "param": self.param}
        return JSONResponse(status_code=self.status, content={"error": body}, headers=headers)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (an unknown route, a wrong method) in OpenAI's shape."""
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"unknown route {request.method} {request.url.path}"
    return APIError(exc.status_code, message, code=str(exc.status_code)).response()


# -- request bodies ----------------------------------------------------------------------------
class Lenient(BaseModel):
    """Unknown fields are ignored: clients send options (user, metadata...) we need not honour."""

    model_config = ConfigDict(extra="ignore")


class ContentPart(Lenient):
    type: str = "text"
    text: str = ""


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def to_message(self) -> Message:
        """Our Message; text parts are joined and `developer` is the newer name for `system`."""
        role = "system" if self.role == "developer" else self.role
        return Message(role=role, content=content_text(self.content))


def content_text(content: str | list[ContentPart] | None) -> str:
    """A message's text: a plain string, or its text parts joined (other parts dropped)."""
    if isinstance(content, list):
        return "".join(part.text for part in content if part.type == "text")
    return content or ""


class StreamOptions(Lenient):
    include_usage: bool = False


class SamplingRequest(Lenient):
    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


#: One prompt as clients send it: text, or token ids (lm-eval's `local-completions` default).
PromptInput = str | list[int]


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=DEFAULT_COMPLETION_MAX_TOKENS, ge=0)
    echo: bool | None = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def prompt_list(self) -> list[PromptInput]:
        """Each prompt of the request, in order: a string or a list of token ids.

        A flat list of integers is one tokenized prompt, as in OpenAI's API; a list of strings
        or of integer lists is a batch.
        """
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise APIError(400, "prompt: the list is empty", param="prompt")
        if all(isinstance(item, int) for item in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]
