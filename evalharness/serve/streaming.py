"""`stream: true`: chat and completions answered as server-sent events, token by token.

Each choice is generated alone on the model worker with a streamer, and its text is sent as it
grows. Text that could still turn into a stop string (or is an incomplete UTF-8 character) is
held back until it is decided, so the concatenated deltas equal the non-streamed answer exactly.
Everything that can be refused (unknown model, context too long, options streaming does not
support) is checked before the first byte, so errors are ordinary HTTP errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.backends.base import stop_index
from evalharness.backends.hf import HFBackend
from evalharness.engine.requests import SamplingParams
from evalharness.serve.completions import (
    chat_prompt,
    check_context,
    check_model,
    decoded_offsets,
    encode_prompt,
    is_seeded,
    response_id,
    sampling_for,
    usage,
)
from evalharness.serve.schema import APIError, ChatCompletionRequest, CompletionRequest
from evalharness.serve.worker import ModelWorker

DONE = "data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` must wait: the longest tail that is the start of
    a stop string, or a trailing replacement character (a multi-byte character still arriving)."""
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:size]):
                hold = size
                break
    if text.endswith("\ufffd"):
        hold = max(hold, 1)
    return hold


@dataclass(frozen=True)
class ChunkFrame:
    """What every event of one streamed response repeats: its id, object, creation time and
    model. With `stream_options.include_usage` every chunk carries `usage: null` and a last
    chunk with no choices carries the counts, as OpenAI streams them."""

    base: dict[str, Any]
    with_usage: bool

    @classmethod
    def start(cls, id_kind: str, object_name: str, model_name: str, with_usage: bool) -> ChunkFrame:
        base = {
            "id": response_id(id_kind),
            "object": object_name,
            "created": int(time.time()),
            "model": model_name,
        }
        return cls(base, with_usage)

    def chunk(self, choice: dict[str, Any]) -> str:
        """The event for one choice's next piece."""
        return event(
            {**self.base, "choices": [choice], **({"usage": None} if self.with_usage else {})}
        )

    def closing(self, n_prompt: int, n_completion: int) -> Iterator[str]:
        """The closing usage event, when the client asked for one."""
        if self.with_usage:
            yield event({**self.base, "choices": [], "usage": usage(n_prompt, n_completion)})


@dataclass(frozen=True)
class Piece:
    """Decided text of one streamed choice; the last piece carries the finish reason and how
    many tokens the answer has (as the non-streamed `usage` counts them)."""

    text: str
    finish: str | None = None
    n_tokens: int = 0


def stream_text(
    worker: ModelWorker,
    prompt_ids: list[int],
    sampling: SamplingParams,
    stops: Sequence[str],
    *,
    seeded: bool = True,
) -> Iterator[Piece]:
    """Text as it is decided, then one finishing piece, ending where the non-streamed answer
    ends: at a stop token or string ("stop") or at the length limit ("length")."""
    backend: HFBackend = worker.backend
    stop_ids = set(backend.stop_token_ids())
    ids: list[int] = []
    sent = 0
    finish = "length"
    tokens = worker.stream(prompt_ids, sampling, seeded=seeded)
    try:
        for token in tokens:
            if token in stop_ids:
                finish = "stop"
                break
            ids.append(token)
            text = backend.tokenizer.decode(ids, skip_special_tokens=True)
            cut = stop_index(text, stops)
            if cut is not None:
                if cut > sent:
                    yield Piece(text[sent:cut])
                kept = sum(1 for offset in decoded_offsets(backend, ids, 0) if offset < cut)
                yield Piece("", "stop", kept)
                return
            ready = len(text) - held_back(text, stops)
            if ready > sent:
                yield Piece(text[sent:ready])
                sent = ready
        text = backend.tokenizer.decode(ids, skip_special_tokens=True)
        if len(text) > sent:
            yield Piece(text[sent:])
        yield Piece("", finish, len(ids))
    finally:
        tokens.close()  # stops the generation if the client went away or a stop string ended it


def chat_events(
    worker: ModelWorker, request: ChatCompletionRequest, model_name: str
) -> Iterator[str]:
    """Validate now; the returned iterator yields the SSE body."""
    check_model(request, model_name)
    if request.logprobs:
        raise APIError(400, "logprobs are not supported with stream=true", param="logprobs")
    prompt_ids, sampling = chat_prompt(worker.backend, request)
    frame = ChunkFrame.start(
        "chat.completion", "chat.completion.chunk", model_name, request.include_usage()
    )
    stops = request.stop_strings()

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> str:
        return frame.chunk(
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        )

    def body() -> Iterator[str]:
        n_completion = 0
        for index in range(request.n):
            yield chunk(index, {"role": "assistant", "content": ""}, None)
            choice_sampling = _choice_sampling(sampling, index)
            for piece in stream_text(
                worker, prompt_ids, choice_sampling, stops, seeded=is_seeded(request)
            ):
                if piece.finish is None:
                    yield chunk(index, {"content": piece.text}, None)
                else:
                    n_completion += piece.n_tokens
                    yield chunk(index, {}, piece.finish)
        yield from frame.closing(len(prompt_ids), n_completion)
        yield DONE

    return _guarded(body())


def completion_events(
    worker: ModelWorker, request: CompletionRequest, model_name: str
) -> Iterator[str]:
    """Validate now; the returned iterator yields the SSE body (choices numbered prompt-major)."""
    check_model(request, model_name)
    if request.logprobs is not None:
        raise APIError(400, "logprobs are not supported with stream=true", param="logprobs")
    backend = worker.backend
    prompts = [encode_prompt(backend, p, with_offsets=False) for p in request.prompt_list()]
    samplings = [
        sampling_for(request, check_context(backend, len(p.ids), request.max_tokens))
        for p in prompts
    ]
    frame = ChunkFrame.start(
        "text_completion", "text_completion", model_name, request.include_usage()
    )

    def chunk(index: int, text: str, finish: str | None) -> str:
        return frame.chunk(
            {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
        )

    def body() -> Iterator[str]:
        n_completion = 0
        index = 0
        for prompt, sampling in zip(prompts, samplings, strict=True):
            for j in range(request.n):
                if request.echo:
                    yield chunk(index, prompt.text, None)
                choice_sampling = _choice_sampling(sampling, j)
                for piece in stream_text(
                    worker,
                    prompt.ids,
                    choice_sampling,
                    request.stop_strings(),
                    seeded=is_seeded(request),
                ):
                    if piece.finish is None:
                        yield chunk(index, piece.text, None)
                    else:
                        n_completion += piece.n_tokens
                        yield chunk(index, "", piece.finish)
                index += 1
        yield from frame.closing(sum(len(p.ids) for p in prompts), n_completion)
        yield DONE

    return _guarded(body())


def _choice_sampling(sampling: SamplingParams, index: int) -> SamplingParams:
    """Choice j of a sampled request draws with seed + j, so the n choices differ."""
    if sampling.greedy or index == 0:
        return sampling
    return SamplingParams(
        temperature=sampling.temperature,
        max_new_tokens=sampling.max_new_tokens,
        top_p=sampling.top_p,
        seed=sampling.seed + index,
    )


def _guarded(body: Iterator[str]) -> Iterator[str]:
    """A failure after the response started is sent as an error event, then the stream ends."""
    try:
        yield from body
    except Exception as exc:  # noqa: BLE001 - the status line is already sent
        message = f"{type(exc).__name__}: {exc}"[:500]
        yield event({"error": {"message": message, "type": "server_error", "code": None}})
        yield DONE
