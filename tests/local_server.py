"""Serve an ASGI app on 127.0.0.1 for a test: a real uvicorn server on a free port, and the
tiny model loaded for serving."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve `app` on a free 127.0.0.1 port in a thread; yields the `/v1` base URL.

    The socket is bound here and handed to uvicorn, so no other process can take the port
    between choosing it and listening on it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def loaded_backend(model_dir: Path) -> Any:
    """An `hf:` backend over `model_dir` with its weights loaded, so the server's first request
    does not pay for (or time out on) loading them."""
    from evalharness.backends.hf import HFBackend
    from evalharness.backends.spec import parse_model_spec

    backend = HFBackend(parse_model_spec(f"hf:{model_dir}"))
    backend.model  # noqa: B018 - load once, before the server's first request
    return backend
