"""`evalharness serve`: OpenAI-compatible server for an hf: model"""

# The server itself is `evalharness.serve`.
# Everything that can be refused is checked before the model loads: the flags, the API key the
# clients must send, whether the host is exposed without one, and whether the port can be bound.

from __future__ import annotations

import argparse
import os
import sys

from evalharness.cli.options import add_model_options, model_spec
from evalharness.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness serve`."""
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-name", default=None, help="model name clients use")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="most rows (prompts x choices) of waiting requests run in one batch (default 32)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --host without --api-key-env (anyone reaching it can use it)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from evalharness.backends import load_backend
    from evalharness.backends.hf import HFBackend
    from evalharness.serve import bind_port, check_exposure, serve

    spec = model_spec(args)
    if spec.workers > 1:
        raise InputError("serve runs the model in its own process: --workers is for run and score")
    if args.max_batch < 1:
        raise InputError(f"--max-batch must be at least 1, not {args.max_batch}")
    api_key = serve_api_key(spec.api_key_env)
    # Before anything loads, so a refused --host costs nothing and never binds.
    warning = check_exposure(args.host, api_key, args.insecure)
    if warning:
        print(f"evalharness: warning: {warning}", file=sys.stderr)
    # A bad or busy --port fails now, not after the model has loaded.
    with bind_port(args.host, args.port) as sock:
        backend = load_backend(spec)
        if not isinstance(backend, HFBackend):
            raise InputError(f"serve needs an hf: model, not {spec.raw!r}")
        name = args.served_name or spec.raw
        serve(
            backend,
            name,
            host=args.host,
            port=args.port,
            api_key=api_key,
            insecure=args.insecure,
            max_batch=args.max_batch,
            sock=sock,
        )
    return 0


def serve_api_key(name: str | None) -> str | None:
    """The key clients of `serve` must send, from the variable `--api-key-env` names.

    A named variable that is unset or empty is an error: serving without the key the user
    asked for would expose the model. The value is never printed.
    """
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise InputError(f"--api-key-env {name}: ${name} is not set or is empty")
    return value
