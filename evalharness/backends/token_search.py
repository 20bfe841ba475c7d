"""What reward-guided decoding (`args:` ARGS, `deal:` DeAL) shares: the wrapped model's
next-token log-probabilities and greedy rollouts, a reward model's score of a partial answer,
and the wrapper backend around both.

Both methods steer decoding token by token, so they need the wrapped model's distribution over
the next token, which only a local transformers model (`hf:`, `builtin:`) gives; the spec
parser admits nothing else. A partial answer is scored as the reward model scores a finished
one (`RewardRequest`: the dialogue plus the answer so far as the assistant turn), as ARGS and
DeAL score prefixes with an ordinary outcome reward model.

The prompt is the wrapped model's chat prompt, encoded and fitted to its context exactly as
`hf:` generation does it, and decoding ends at the model's stop tokens, so a search that always
picks the model's own top token reproduces its greedy answer.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.backends.base import ForwardingBackend
from evalharness.backends.context import fit_prompt
from evalharness.backends.registry import load_single
from evalharness.backends.spec import (
    ModelSpec,
    parse_model_spec,
    split_reward_guided,
    wrapped_model_spec,
)
from evalharness.engine.requests import (
    FailedResult,
    GenerateRequest,
    GenerateResult,
    Message,
    Request,
    Result,
    RewardRequest,
    SamplingParams,
)


@dataclass
class Decoded:
    """One request's search result: the new token ids (stop token excluded) and why it ended."""

    tokens: list[int]
    finish_reason: str


class IncrementalLogprobs:
    """The next-token log-probabilities of one growing sequence, its KV cache kept between
    steps: each step feeds only the new token, as `generate` does, instead of the whole
    prompt and answer again."""

    def __init__(self, model: Any, on_device: Any, prompt: list[int]) -> None:
        from transformers import DynamicCache

        self.model = model
        self.on_device = on_device
        self.cache = DynamicCache()
        #: A float32 [vocab] tensor on the CPU: the distribution after everything fed so far.
        self.logprobs = self._feed(prompt)

    def _feed(self, tokens: list[int]) -> Any:
        import torch

        with torch.inference_mode():
            logits = self.model(
                input_ids=self.on_device(torch.tensor([tokens])),
                past_key_values=self.cache,
                use_cache=True,
            ).logits[0, -1]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def advance(self, token: int) -> None:
        """Append `token`; `logprobs` becomes the distribution after it."""
        self.logprobs = self._feed([token])


class TokenSearchBackend(ForwardingBackend):
    """A generating model steered by a reward model, token by token; subclasses search.

    Everything but chat generation passes through to the wrapped model.
    """

    #: The spec prefix and the identity's `backend`.
    method: str
    #: Option defaults; `max_tokens` None means the request's own `max_new_tokens`.
    defaults: dict[str, Any]
    #: Bumped whenever the search changes what it returns, so cached answers are not reused.
    version: int = 1

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = spec.batch_size
        options, reward_raw, model_raw = split_reward_guided(self.method, spec.name)
        self.options: dict[str, Any] = {**self.defaults, **options}
        # The command line's model options configure the wrapped model.
        self.model_spec = wrapped_model_spec(spec, model_raw)
        self.model: Any = load_single(self.model_spec)
        reward_spec = parse_model_spec(
            reward_raw,
            dtype=spec.dtype,
            device=spec.device,
            device_map=spec.device_map,
            batch_size=spec.batch_size,
            trust_remote_code=spec.trust_remote_code,
        )
        self.reward_model: Any = load_single(reward_spec)
        self._identity = {
            "backend": self.method,
            "version": self.version,
            "options": dict(sorted(self.options.items())),
            "reward": self.reward_model.identity,
            "model": self.model.identity,
        }

    @property
    def identity(self) -> dict[str, Any]:
        """Every resolved option, the reward model and the wrapped model: not the spec's
        spelling, so options left at their defaults and spelled out share answers."""
        return self._identity

    @property
    def display_name(self) -> str:
        return self.spec.raw

    def device_record(self) -> dict[str, Any] | None:
        record = self.model.device_record()
        if self.reward_model.device_record():
            record = {**(record or {}), "reward_model": self.reward_model.device_record()}
        return record

    # -- what the searches use -------------------------------------------------------------
    def prompt_ids(self, request: GenerateRequest) -> tuple[list[int], bool]:
        """The chat prompt's token ids, fitted to the context as `hf:` generation fits them,
        and whether its start was cut."""
        prompt = self.model.encode(self.model.render_chat(request.messages), templated=True)
        return fit_prompt(prompt, self.token_budget(request), self.model.context_limit)

    def token_budget(self, request: GenerateRequest) -> int:
        """New tokens at most: the request's, capped by the `max_tokens` option."""
        cap = self.options.get("max_tokens")
        budget = request.sampling.max_new_tokens
        return budget if cap is None else min(budget, int(cap))

    def stop_ids(self) -> list[int]:
        return self.model.stop_token_ids()

    def decode(self, tokens: Sequence[int]) -> str:
        return self.model.tokenizer.decode(list(tokens), skip_special_tokens=True)

    def next_logprobs(self, sequences: Sequence[Sequence[int]]) -> Any:
        """Log-probabilities of the next token after each sequence: a float32 [n, vocab] tensor
        from one forward pass. The sequences are a search's beams, the prompt and as many new
        tokens each, so they are of one length and need no padding."""
        import torch

        input_ids = torch.tensor([list(s) for s in sequences], dtype=torch.long)
        with torch.inference_mode():
            logits = self.model.model(input_ids=self.model._on_device(input_ids)).logits[:, -1, :]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def incremental(self, prompt: list[int]) -> IncrementalLogprobs:
        """Step-by-step log-probabilities after `prompt`, with a KV cache."""
        return IncrementalLogprobs(self.model.model, self.model._on_device, prompt)

    def rollouts(self, sequences: Sequence[Sequence[int]], n_tokens: int) -> list[list[int]]:
        """Each sequence's greedy continuation of at most `n_tokens` tokens (stop token cut),
        from the wrapped model's own `generate`, in batches."""
        if n_tokens <= 0 or not sequences:
            return [[] for _ in sequences]
        greedy = SamplingParams(temperature=0.0, max_new_tokens=n_tokens)
        found: list[list[int]] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = [list(s) for s in sequences[start : start + self.batch_size]]
            found += [tokens for tokens, _ in self.model.generate_ids(chunk, greedy)]
        return found

    def rewards(self, messages: tuple[Message, ...], answers: Sequence[str]) -> list[float]:
        """The reward model's score of each (partial) answer as the dialogue's next turn."""
        requests = [RewardRequest((*messages, Message("assistant", a))) for a in answers]
        return [result.reward for result in self.reward_model.reward(requests)]

    # -- generation ------------------------------------------------------------------------
    @abstractmethod
    def search(self, request: GenerateRequest, prompt: list[int]) -> Decoded:
        """The new tokens the method chooses for one request."""

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.model.model  # noqa: B018 - loads the weights (a cached run never gets here)
        results = []
        for request in requests:
            prompt, cut = self.prompt_ids(request)
            decoded = self.search(request, prompt)
            results.append(
                GenerateResult(
                    text=self.decode(decoded.tokens).strip(),
                    n_prompt_tokens=len(prompt),
                    n_generated_tokens=len(decoded.tokens),
                    finish_reason=decoded.finish_reason,
                    truncated=cut,
                )
            )
        return results

    def forward(self, method: str, requests: Sequence[Any]) -> list[Any]:
        return getattr(self.model, method)(requests)

    def answer_tolerant(self, requests: Sequence[Request]) -> list[Result | FailedResult]:
        return list(self.answer(requests))

    def close(self) -> None:
        self.model.close()
        self.reward_model.close()
