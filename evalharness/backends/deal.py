"""`deal:[k=K,beam=B,lookahead=L,max_tokens=T:]rm:REWARD_MODEL:MODEL`: DeAL search.

DeAL (Huang et al. 2024, "DeAL: Decoding-time Alignment for Large Language Models") treats
decoding as a heuristic search over partial answers, with the user's reward as the heuristic.
Here it is a beam search:

1. Each partial answer on the beam is extended by the model's k most likely next tokens.
2. Each extension is looked ahead: the model continues it greedily for L tokens, and the
   reward model scores the dialogue ending in that look-ahead answer (L = 0 scores the
   extension itself). The score is the extension's heuristic.
3. An extension that ends (the model's stop token, or the token budget) is a finished
   candidate, scored by the reward of its own text (no look-ahead is left to take); of the
   others, the B with the best heuristic stay on the beam.
4. When the beam is empty, the finished candidate with the highest reward is the answer (the
   first found on ties): a complete answer the search has seen is never thrown away for a
   worse one, which is what the reward asks for.

Every finished candidate is kept in `explored`, per request of the last call, so what the
search saw can be inspected. With k = 1 and B = 1 the search is the model's greedy decoding.
Options: `k` (default 4), `beam` (default 2), `lookahead` (default 4), `max_tokens` (new tokens
at most, below the request's own budget). The request's temperature is not used: the search
is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalharness.backends.token_search import Decoded, TokenSearchBackend
from evalharness.engine.requests import GenerateRequest, GenerateResult


@dataclass
class Candidate:
    """A partial (or finished) answer: its tokens, heuristic, and how it ended if it did."""

    tokens: list[int]
    score: float = 0.0
    finish_reason: str | None = None


class DealBackend(TokenSearchBackend):
    """Beam search over partial answers, ranked by the reward of a greedy look-ahead."""

    method = "deal"
    defaults: dict[str, Any] = {"k": 4, "beam": 2, "lookahead": 4, "max_tokens": None}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The finished candidates each request of the last `generate` call explored.
        self.explored: list[list[Candidate]] = []

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.explored = []
        return super().generate(requests)

    def expand(
        self, prompt: list[int], beams: list[Candidate], budget: int, stops: set[int]
    ) -> list[Candidate]:
        """Every beam's k most likely extensions, the ended ones marked."""
        logprobs = self.next_logprobs([prompt + beam.tokens for beam in beams])
        k = min(int(self.options["k"]), logprobs.shape[-1])
        extensions = []
        for beam, row in zip(beams, logprobs, strict=True):
            for token in row.topk(k).indices.tolist():
                if token in stops:
                    extensions.append(Candidate(beam.tokens, finish_reason="stop"))
                    continue
                tokens = beam.tokens + [token]
                ended = "length" if len(tokens) >= budget else None
                extensions.append(Candidate(tokens, finish_reason=ended))
        return extensions

    def heuristics(
        self, request: GenerateRequest, prompt: list[int], extensions: list[Candidate], budget: int
    ) -> None:
        """Set each extension's score: the reward of its greedy look-ahead (of its own text
        once it has ended)."""
        lookahead = int(self.options["lookahead"])
        open_ones = [c for c in extensions if c.finish_reason is None]
        steps = min((budget - len(c.tokens) for c in open_ones), default=0)
        ahead = self.rollouts([prompt + c.tokens for c in open_ones], min(lookahead, steps))
        continued = dict(zip(map(id, open_ones), ahead, strict=True))
        texts = [self.decode(c.tokens + continued.get(id(c), [])) for c in extensions]
        for candidate, reward in zip(
            extensions, self.rewards(request.messages, texts), strict=True
        ):
            candidate.score = reward

    def search(self, request: GenerateRequest, prompt: list[int]) -> Decoded:
        budget = self.token_budget(request)
        if budget <= 0:
            return Decoded([], "length")
        stops = set(self.stop_ids())
        finished: list[Candidate] = []
        beams = [Candidate([])]
        while beams:
            extensions = self.expand(prompt, beams, budget, stops)
            self.heuristics(request, prompt, extensions, budget)
            finished += [c for c in extensions if c.finish_reason is not None]
            open_ones = [c for c in extensions if c.finish_reason is None]
            beams = sorted(open_ones, key=lambda c: -c.score)[: int(self.options["beam"])]
        self.explored.append(finished)
        best = max(finished, key=lambda c: c.score)
        return Decoded(best.tokens, best.finish_reason or "length")
