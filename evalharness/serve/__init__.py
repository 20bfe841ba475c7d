"""`evalharness serve`: an OpenAI-compatible server for an `hf:` model.

`app` has the routes, auth and `serve`; `schema` the request bodies; `completions` and
`streaming` answer requests; `worker` runs the model, batching concurrent requests, and
`logprobs` scores the tokens a client asks log-probabilities of.
"""

from evalharness.serve.app import bind_port, check_exposure, create_app, is_loopback, serve
from evalharness.serve.completions import run_chat, run_completion
from evalharness.serve.schema import ChatCompletionRequest, CompletionRequest

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "bind_port",
    "check_exposure",
    "create_app",
    "is_loopback",
    "run_chat",
    "run_completion",
    "serve",
]
