"""Chat and legacy completions answered in one JSON body: prompts in, OpenAI's shapes out.

Every prompt and every choice of a request is queued on the model worker before any result is
awaited, so a request with several prompts (lm-eval sends a batch of token-id prompts) or `n`
choices runs as one batch, together with whatever other requests are waiting.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.backends.base import stop_index
from evalharness.backends.hf import HFBackend
from evalharness.engine.requests import SamplingParams
from evalharness.serve.logprobs import TokenLogprob
from evalharness.serve.schema import (
    DEFAULT_CHAT_MAX_TOKENS,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    PromptInput,
    SamplingRequest,
)
from evalharness.serve.worker import ModelWorker


# -- tokens and text ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedPrompt:
    """One completions prompt as the model sees it, with the text clients get back on echo."""

    text: str
    ids: list[int]
    #: Start offset of each token in `text`; empty until a caller needs them.
    offsets: list[int]


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


def encode_prompt(backend: HFBackend, prompt: PromptInput, *, with_offsets: bool) -> EncodedPrompt:
    """Text is tokenized as `HFBackend.encode(text, templated=False)` does; token ids are taken
    as they are (checked against the vocabulary), which is what makes a client's own
    tokenization, e.g. lm-eval's, score exactly what that client meant."""
    if isinstance(prompt, str):
        ids, offsets = encode_with_offsets(backend, prompt)
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        return EncodedPrompt(prompt, ids, offsets)
    if not prompt:
        raise APIError(400, "the prompt is empty", param="prompt")
    vocab = len(backend.tokenizer)
    bad = next((token for token in prompt if not 0 <= token < vocab), None)
    if bad is not None:
        raise APIError(
            400, f"token id {bad} is outside the vocabulary (0..{vocab - 1})", param="prompt"
        )
    text = backend.tokenizer.decode(prompt, skip_special_tokens=True)
    offsets = decoded_offsets(backend, prompt, 0) if with_offsets else []
    return EncodedPrompt(text, list(prompt), offsets)


def decoded_offsets(backend: HFBackend, ids: Sequence[int], base: int) -> list[int]:
    """Start offset of each token in `decode(ids)`, shifted by `base` (text before them)."""
    decode = backend.tokenizer.decode
    return [base + len(decode(list(ids[:i]), skip_special_tokens=True)) for i in range(len(ids))]


def token_text(backend: HFBackend, token_id: int) -> str:
    return backend.tokenizer.decode([token_id], skip_special_tokens=False)


# -- one generation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Completion:
    """What the model produced for one choice, before it is shaped into JSON."""

    prompt_ids: list[int]
    new_ids: list[int]
    text: str
    finish_reason: str
    #: Start offset of each new token in `text`.
    offsets: list[int]
    #: The stop token (EOS) that ended the answer, not part of `new_ids` or `text`.
    stop_token: int | None = None


def finish_completion(
    backend: HFBackend,
    prompt_ids: list[int],
    generated: tuple[list[int], str],
    stops: Sequence[str],
    *,
    with_offsets: bool = False,
) -> Completion:
    """Split off the stop token, decode, and truncate at the first stop string (dropping the
    tokens after it).

    Token offsets cost one decode per token, so they are computed only when a stop string or
    the legacy `text_offset` needs them.
    """
    new_ids, finish = generated
    stop_token = None
    if finish == "stop" and new_ids and new_ids[-1] in backend.stop_token_ids():
        new_ids, stop_token = new_ids[:-1], new_ids[-1]
    text = backend.tokenizer.decode(new_ids, skip_special_tokens=True)
    offsets = decoded_offsets(backend, new_ids, 0) if stops or with_offsets else []
    cut = stop_index(text, stops)
    if cut is not None:
        kept = sum(1 for offset in offsets if offset < cut)
        new_ids, offsets, text, finish = new_ids[:kept], offsets[:kept], text[:cut], "stop"
        stop_token = None
    return Completion(prompt_ids, new_ids, text, finish, offsets, stop_token)


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


def sampling_for(request: SamplingRequest, max_tokens: int) -> SamplingParams:
    """OpenAI's defaults (temperature 1, top_p 1) applied. Without a seed, `seed` is 0 and the
    worker is told `seeded=False` (see `is_seeded`): it then draws a fresh one."""
    temperature = 1.0 if request.temperature is None else max(request.temperature, 0.0)
    top_p = 1.0 if request.top_p is None else request.top_p
    return SamplingParams(
        temperature=temperature, top_p=top_p, max_new_tokens=max_tokens, seed=request.seed or 0
    )


def is_seeded(request: SamplingRequest) -> bool:
    """Whether the client asked for a reproducible draw; without a seed, sampling is fresh."""
    return request.seed is not None


def check_model(request: SamplingRequest, model_name: str) -> None:
    if request.model != model_name:
        raise APIError(
            404,
            f"The model `{request.model}` does not exist; this server serves `{model_name}`",
            code="model_not_found",
            param="model",
        )


def chat_prompt(
    backend: HFBackend, request: ChatCompletionRequest
) -> tuple[list[int], SamplingParams]:
    """The chat prompt's token ids, through the model's chat template, and the sampling it
    runs with: what the request asked, its token limit checked against the context."""
    prompt = backend.render_chat([m.to_message() for m in request.messages])
    prompt_ids = backend.encode(prompt, templated=True)
    wanted = request.max_completion_tokens or request.max_tokens
    return prompt_ids, sampling_for(request, check_context(backend, len(prompt_ids), wanted))


# -- JSON shapes -------------------------------------------------------------------------------
def usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
    }


def response_id(kind: str) -> str:
    return f"{'chatcmpl' if kind.startswith('chat.') else 'cmpl'}-{uuid.uuid4().hex}"


def envelope(
    kind: str, model_name: str, choices: list[dict[str, Any]], use: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": response_id(kind),
        "object": kind,
        "created": int(time.time()),
        "model": model_name,
        "choices": choices,
        "usage": use,
    }


def chat_logprobs_content(backend: HFBackend, scored: list[TokenLogprob]) -> list[dict[str, Any]]:
    """`choices[i].logprobs.content` of the chat API: token, logprob, bytes, top alternatives."""

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


# -- whole requests ----------------------------------------------------------------------------
def run_chat(worker: ModelWorker, request: ChatCompletionRequest, model_name: str) -> dict:
    """Answer one chat completion request with its `n` choices."""
    check_model(request, model_name)
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs requires logprobs=true", param="top_logprobs")
    backend = worker.backend
    prompt_ids, sampling = chat_prompt(backend, request)
    generated = worker.submit_generate(
        prompt_ids, sampling, request.n, seeded=is_seeded(request)
    ).result()
    stops = request.stop_strings()
    done = [finish_completion(backend, prompt_ids, g, stops) for g in generated]
    logprobs: list[dict[str, Any] | None] = [None] * len(done)
    if request.logprobs:
        top_k = request.top_logprobs or 0
        futures = [
            worker.submit_score(prompt_ids + d.new_ids, len(prompt_ids), top_k) for d in done
        ]
        logprobs = [{"content": chat_logprobs_content(backend, f.result())} for f in futures]
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": d.text},
            "finish_reason": d.finish_reason,
            "logprobs": lp,
        }
        for index, (d, lp) in enumerate(zip(done, logprobs, strict=True))
    ]
    n_completion = sum(len(d.new_ids) for d in done)
    return envelope("chat.completion", model_name, choices, usage(len(prompt_ids), n_completion))


def run_completion(worker: ModelWorker, request: CompletionRequest, model_name: str) -> dict:
    """Answer one legacy completion request: `n` choices for each prompt, indexed prompt-major
    (choice `i * n + j` is prompt i's j-th), as OpenAI numbers them."""
    check_model(request, model_name)
    backend = worker.backend
    wants_logprobs = request.logprobs is not None
    prompts = [
        encode_prompt(backend, p, with_offsets=wants_logprobs) for p in request.prompt_list()
    ]
    futures = [
        worker.submit_generate(
            p.ids,
            sampling_for(request, check_context(backend, len(p.ids), request.max_tokens)),
            request.n,
            seeded=is_seeded(request),
        )
        for p in prompts
    ]
    stops = request.stop_strings()
    done = [
        [
            finish_completion(backend, p.ids, g, stops, with_offsets=wants_logprobs)
            for g in f.result()
        ]
        for p, f in zip(prompts, futures, strict=True)
    ]
    logprobs: list[list[Any]] = [[None] * len(d) for d in done]
    if wants_logprobs:
        logprobs = _completion_logprobs(worker, request, prompts, done)
    choices = []
    for prompt, completions, scored in zip(prompts, done, logprobs, strict=True):
        for completion, lp in zip(completions, scored, strict=True):
            text = prompt.text + completion.text if request.echo else completion.text
            choice = {
                "index": len(choices),
                "text": text,
                "finish_reason": completion.finish_reason,
            }
            choices.append({**choice, "logprobs": lp})
    n_prompt = sum(len(p.ids) for p in prompts)
    n_completion = sum(len(_generated(c)) for completions in done for c in completions)
    return envelope("text_completion", model_name, choices, usage(n_prompt, n_completion))


def _completion_logprobs(
    worker: ModelWorker,
    request: CompletionRequest,
    prompts: list[EncodedPrompt],
    done: list[list[Completion]],
) -> list[list[dict[str, Any]]]:
    """Legacy logprobs over the echoed prompt (first token None) and/or the new tokens.

    Offsets index the prompt followed by the completion, as OpenAI's do, with or without echo.
    A stop token that ended the answer is listed last (as vLLM lists it): lm-eval's
    `local-completions` asks for one new token and drops the last listed one, so without it
    lm-eval would drop a prompt token instead whenever the model's next token is EOS.
    Every choice's scoring pass is queued before any is awaited, so they share forward passes.
    """
    backend = worker.backend
    top_k = request.logprobs or 0
    futures = [
        [
            worker.submit_score(
                c.prompt_ids + _generated(c), 1 if request.echo else len(c.prompt_ids), top_k
            )
            for c in completions
        ]
        for completions in done
    ]
    results: list[list[dict[str, Any]]] = []
    for prompt, completions, pending in zip(prompts, done, futures, strict=True):
        row = []
        for c, future in zip(completions, pending, strict=True):
            scored: list[TokenLogprob | None] = list(future.result())
            new_offsets = [len(prompt.text) + offset for offset in c.offsets]
            if c.stop_token is not None:
                new_offsets.append(len(prompt.text) + len(c.text))
            if request.echo:
                all_ids = c.prompt_ids + _generated(c)
                offsets = prompt.offsets + new_offsets
                row.append(legacy_logprobs(backend, all_ids, [None, *scored], offsets))
            else:
                row.append(legacy_logprobs(backend, _generated(c), scored, new_offsets))
        results.append(row)
    return results


def _generated(completion: Completion) -> list[int]:
    """Every token the model generated for a legacy completion, the ending stop token too."""
    stop = [] if completion.stop_token is None else [completion.stop_token]
    return completion.new_ids + stop
