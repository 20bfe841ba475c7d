"""`args:[k=K,w=W,max_tokens=T:]rm:REWARD_MODEL:MODEL`: ARGS reward-guided decoding.

ARGS (Khanov et al. 2024, "ARGS: Alignment as Reward-Guided Search") aligns a model at
decoding time, with no training: at each step the model's k most likely next tokens are
re-scored as

    score(v) = log p(v | prompt, prefix) + w * reward(prompt, prefix + v)

and the best-scoring token is appended (ARGS-greedy). ARGS's own code adds w * reward to the
raw logits, which differ from the log-probabilities by one constant per step: the same choice
(and the same softmax below). Its reward model reads the policy's token ids, which needs a
shared tokenizer; here it reads the dialogue and partial answer as text, through its own chat
template (`token_search.py`), so any `rm:` model fits. A request that samples (temperature > 0)
draws the token from softmax(score / temperature) over the same k tokens instead (the paper's
stochastic variant), seeded by the request's seed. With w = 0 the greedy variant is the model's
own greedy decoding; a large w follows the reward model wherever the k candidates allow.

Options: `k` (candidates per step, default 10), `w` (reward weight, default 1.0), `max_tokens`
(new tokens at most, below the request's own budget).
Each step costs one forward pass of the model over the new token (its KV cache is kept) and k
reward-model scores; top_p is not used.
"""

from __future__ import annotations

from typing import Any

from evalharness.backends.token_search import Decoded, TokenSearchBackend
from evalharness.engine.requests import GenerateRequest


class ArgsBackend(TokenSearchBackend):
    """Greedy (or sampled) decoding over reward-adjusted scores of the top-k next tokens."""

    method = "args"
    defaults: dict[str, Any] = {"k": 10, "w": 1.0, "max_tokens": None}

    def step_scores(
        self, request: GenerateRequest, logprobs: Any, tokens: list[int]
    ) -> tuple[list[int], list[float]]:
        """The k candidate tokens after the answer so far (`tokens`, whose next-token
        distribution is `logprobs`) and their ARGS scores."""
        top = logprobs.topk(min(int(self.options["k"]), logprobs.shape[-1]))
        candidates = top.indices.tolist()
        scores = top.values.tolist()
        weight = float(self.options["w"])
        if weight != 0.0:
            texts = [self.decode(tokens + [token]) for token in candidates]
            rewards = self.rewards(request.messages, texts)
            scores = [s + weight * r for s, r in zip(scores, rewards, strict=True)]
        return candidates, scores

    def search(self, request: GenerateRequest, prompt: list[int]) -> Decoded:
        import torch

        sampling = request.sampling
        generator = None
        if not sampling.greedy:
            generator = torch.Generator().manual_seed(sampling.seed)
        stops = set(self.stop_ids())
        budget = self.token_budget(request)
        if budget <= 0:
            return Decoded([], "length")
        model = self.incremental(prompt)
        tokens: list[int] = []
        for _ in range(budget):
            candidates, scores = self.step_scores(request, model.logprobs, tokens)
            if generator is None:
                # The first of equal scores: the model's more likely token.
                choice = max(range(len(scores)), key=scores.__getitem__)
            else:
                weights = torch.softmax(torch.tensor(scores) / sampling.temperature, dim=-1)
                choice = int(torch.multinomial(weights, 1, generator=generator))
            token = candidates[choice]
            if token in stops:
                return Decoded(tokens, "stop")
            tokens.append(token)
            if len(tokens) < budget:
                model.advance(token)
        return Decoded(tokens, "length")
