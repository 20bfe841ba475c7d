"""Scoring primitives: log-probabilities of target tokens from hidden states and an LM head.

`token_logprobs_chunked` is the PyTorch path that never holds more than a chunk of the
`[tokens, vocab]` logits at once; it is what the `hf:` backend scores continuations with.
"""

from .chunked import token_logprobs_chunked

__all__ = ["token_logprobs_chunked"]
