"""Generation for `HFBackend`: left-padded batches through `model.generate`.

Requests are grouped by their decoding settings and sorted by length, so each batch pads
little; prompts sharing a long prefix (few-shot demonstrations) prefill it once. Stop strings
end a row only when they occur in the generated text, as OpenAI's API, vLLM and lm-eval do.
The served model (`evalharness.serve`) generates through the same `generate_ids`, so a greedy
answer served over HTTP is the answer `HFBackend.generate` gives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from evalharness.backends.base import all_results, cut_at_stop
from evalharness.backends.context import fit_prompt
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateRequest,
    GenerateResult,
    Message,
    SamplingParams,
)

#: Prompts in one batch sharing at least this many leading tokens reuse one prefix KV cache.
PREFIX_CACHE_MIN_TOKENS = 256

#: Decoding settings shared by a batch: sampling, stop strings, and whether the text is kept
#: verbatim (`CompleteRequest.verbatim`) or stripped.
Decoding = tuple[SamplingParams, tuple[str, ...], bool]


class GeneratedStopStrings:
    """A stopping criterion: a row is done once a stop string occurs in its *generated* text.

    transformers' own `stop_strings` also match across the prompt's end (a prompt ending in
    "\n" and a generated "\n" would stop a "\n\n" task after one token), which OpenAI's API,
    vLLM and lm-eval's `hf` model never do. As lm-eval's `MultiTokenEOSCriteria`, only the last
    few generated tokens are decoded at each step.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_width = prompt_width
        lengths = [len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stops]
        self.lookback = max(lengths, default=0) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tails = input_ids[:, self.prompt_width :][:, -self.lookback :]
        texts = self.tokenizer.batch_decode(tails)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest common leading token run, always leaving each prompt one token of its own
    (generation needs at least one uncached input token)."""
    if not prompts:
        return []
    limit = min(len(p) for p in prompts) - 1
    length = 0
    first = prompts[0]
    while length < limit and all(p[length] == first[length] for p in prompts[1:]):
        length += 1
    return first[:length]


class HFGeneration:
    """`generate` and `complete` of `HFBackend`, which provides the model, tokenizer, prompt
    encoding, context limit, stop tokens and device placement used here."""

    model: Any
    tokenizer: Any
    batch_size: int
    context_limit: int | None

    render_chat: Callable[[Sequence[Message]], str]
    encode: Callable[..., list[int]]
    stop_token_ids: Callable[[], list[int]]
    _on_device: Callable[[Any], Any]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        encoded = [self.encode(self.render_chat(r.messages), templated=True) for r in requests]
        return self._generate_fitted(encoded, [(r.sampling, (), False) for r in requests])

    def complete(self, requests: Sequence[CompleteRequest]) -> list[GenerateResult]:
        encoded = [self.encode(r.prompt, templated=False) for r in requests]
        return self._generate_fitted(encoded, [(r.sampling, r.stop, r.verbatim) for r in requests])

    def _generate_fitted(
        self, encoded: list[list[int]], settings: list[Decoding]
    ) -> list[GenerateResult]:
        """Prompts too long for the context lose their start (`fit_prompt`); their results
        say `truncated`."""
        limit = self.context_limit
        fitted = [
            fit_prompt(prompt, sampling.max_new_tokens, limit)
            for prompt, (sampling, _, _) in zip(encoded, settings, strict=True)
        ]
        results = self._generate_encoded([prompt for prompt, _ in fitted], settings)
        return [
            replace(result, truncated=True) if cut else result
            for result, (_, cut) in zip(results, fitted, strict=True)
        ]

    def _generate_encoded(
        self, encoded: list[list[int]], settings: list[Decoding]
    ) -> list[GenerateResult]:
        """Group by decoding settings, sort by length, generate in left-padded batches."""
        results: list[GenerateResult | None] = [None] * len(encoded)
        groups: dict[Decoding, list[int]] = defaultdict(list)
        for index, setting in enumerate(settings):
            groups[setting].append(index)
        for (sampling, stop, verbatim), indices in groups.items():
            prefix = shared_prefix([encoded[i] for i in indices])
            if len(indices) > 1 and len(prefix) >= PREFIX_CACHE_MIN_TOKENS:
                # Few-shot prompts that share their demonstrations: prefill those once.
                outputs = self.generate_with_prefix(
                    prefix, [encoded[i] for i in indices], sampling, stop, verbatim=verbatim
                )
                for index, output in zip(indices, outputs, strict=True):
                    results[index] = output
                continue
            order = sorted(indices, key=lambda i: len(encoded[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                outputs = self.generate_token_ids(
                    [encoded[i] for i in chunk], sampling, stop, verbatim=verbatim
                )
                for index, output in zip(chunk, outputs, strict=True):
                    results[index] = output
        return all_results(results)

    def generate_with_prefix(
        self,
        prefix: list[int],
        prompts: list[list[int]],
        sampling: SamplingParams,
        stop: tuple[str, ...] = (),
        *,
        verbatim: bool = False,
    ) -> list[GenerateResult]:
        """Prompts that all start with `prefix`: its KV cache is computed once and copied into
        each generation, so only each prompt's own tail is prefilled.

        This is what makes long in-context learning affordable: every query of a LIConBench
        round shares thousands of demonstration tokens.
        """
        import torch
        from transformers import DynamicCache

        cache = DynamicCache()
        with torch.inference_mode():
            self.model(
                input_ids=self._on_device(torch.tensor([prefix])),
                past_key_values=cache,
                use_cache=True,
            )
        results = []
        for prompt in prompts:
            results += self.generate_token_ids(
                [prompt], sampling, stop, prefix_cache=cache, verbatim=verbatim
            )
        return results

    def generate_token_ids(
        self,
        prompts: list[list[int]],
        sampling: SamplingParams,
        stop: tuple[str, ...] = (),
        prefix_cache: Any = None,
        *,
        verbatim: bool = False,
    ) -> list[GenerateResult]:
        """One left-padded batch, decoded (and cut at the first stop string); stripped unless
        `verbatim` (`CompleteRequest.verbatim`)."""
        results = []
        for prompt, (new_tokens, finish) in zip(
            prompts, self.generate_ids(prompts, sampling, stop, prefix_cache), strict=True
        ):
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, stop)
            # Ended early without a stop token: a stop string did it (its match may lie in a
            # special token that decoding drops).
            early = stop and len(new_tokens) < sampling.max_new_tokens
            finish = "stop" if stopped or early else finish
            results.append(
                GenerateResult(
                    text=text if verbatim else text.strip(),
                    n_prompt_tokens=len(prompt),
                    n_generated_tokens=len(new_tokens),
                    finish_reason=finish,
                )
            )
        return results

    def generate_ids(
        self,
        prompts: list[list[int]],
        sampling: SamplingParams,
        stop: tuple[str, ...] = (),
        prefix_cache: Any = None,
        streamer: Any = None,
        keep_stop_token: bool = False,
    ) -> list[tuple[list[int], str]]:
        """One left-padded batch through `model.generate`: new token ids (cut at the first stop
        token) and the finish reason ("stop" or "length") per prompt.

        `prefix_cache` (one prompt only) holds the KV cache of the prompt's first tokens; a copy
        is used, so the same cache serves the next prompt. `streamer` (one prompt only) is a
        transformers streamer that sees each new token as it is generated (the server's SSE).
        `keep_stop_token` keeps the stop token that ended a row (the server reports it in
        logprobs, as vLLM does, and lm-eval relies on it).
        """
        import copy

        import torch
        from transformers import StoppingCriteriaList

        if sampling.max_new_tokens == 0:
            return [([], "length") for _ in prompts]
        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention[row, width - len(prompt) :] = 1
        stop_ids = self.stop_token_ids()
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": pad_id,
            "eos_token_id": stop_ids,
        }
        if prefix_cache is not None:
            assert len(prompts) == 1, "a prefix cache serves one prompt at a time"
            kwargs["past_key_values"] = copy.deepcopy(prefix_cache)
        if streamer is not None:
            assert len(prompts) == 1, "a streamer follows one prompt"
            kwargs["streamer"] = streamer
        if stop:
            # Ends each row at a stop string instead of running to max_new_tokens.
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [GeneratedStopStrings(self.tokenizer, stop, width)]
            )
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            torch.manual_seed(sampling.seed)
            kwargs.update(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=None
            )
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=self._on_device(input_ids),
                attention_mask=self._on_device(attention),
                **kwargs,
            )
        outputs = []
        for row in range(len(prompts)):
            new_tokens = output[row, width:].tolist()
            finish = "length"
            for position, token in enumerate(new_tokens):
                if token in stop_ids:
                    new_tokens, finish = new_tokens[: position + keep_stop_token], "stop"
                    break
            outputs.append((new_tokens, finish))
        return outputs
