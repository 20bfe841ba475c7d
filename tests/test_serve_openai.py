"""The OpenAI-compatible server and the `openai:` backend, against each other over real HTTP.

A uvicorn server runs in a background thread on a free local port and serves the tiny model;
the `openai:` backend must then give what the `hf:` backend gives on the same weights.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from cli_helpers import free_port, run_cli, spawn_cli, wait_until_healthy, write_lines
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from local_server import loaded_backend, running_server

from evalharness.backends import load_backend
from evalharness.backends.hf import HFBackend
from evalharness.backends.hf_generation import PREFIX_CACHE_MIN_TOKENS, shared_prefix
from evalharness.backends.openai_api import PLACEHOLDER_KEY, OpenAIBackend, api_key_for
from evalharness.backends.spec import parse_model_spec
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateRequest,
    Message,
    SamplingParams,
    ScoreRequest,
)
from evalharness.errors import BackendError, InputError
from evalharness.serve import CompletionRequest, create_app, is_loopback, run_completion
from evalharness.serve.worker import ModelWorker

MODEL = "tiny-chat"
KEY_ENV = "EVALHARNESS_TEST_OPENAI_KEY"
SECRET = "sk-test-SECRET-7c1f0e9a4b"
QUESTION = (Message("user", "What is the capital of France?"),)


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFBackend:
    return loaded_backend(tiny_model_dir)


@pytest.fixture(scope="module")
def base_url(hf: HFBackend) -> Iterator[str]:
    with running_server(create_app(hf, MODEL)) as url:
        yield url


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every backend here names KEY_ENV explicitly, and a named variable must hold a key."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


@pytest.fixture()
def dead_url() -> Iterator[str]:
    """A port that is bound but not listening: connections are refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


def openai_backend(url: str, model: str = MODEL, **options: Any) -> OpenAIBackend:
    settings = {"max_retries": 0, "timeout_s": 60.0, "concurrency": 2, "api_key_env": KEY_ENV}
    settings.update(options)
    backend = load_backend(parse_model_spec(f"openai:{model}", base_url=url, **settings))
    assert isinstance(backend, OpenAIBackend)
    return backend


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60)


def reference_logprobs(hf: HFBackend, ids: list[int]) -> list[float]:
    """log_softmax of the model's own logits at each token after the first: the ground truth."""
    with torch.inference_mode():
        logits = hf.model(input_ids=torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]


# -- the server's API ----------------------------------------------------------------------------
def test_models_lists_the_served_model(base_url: str) -> None:
    body = httpx.get(f"{base_url}/models", timeout=10).json()
    assert body["object"] == "list"
    assert [card["id"] for card in body["data"]] == [MODEL]


def test_chat_completion_returns_text_and_usage(base_url: str, hf: HFBackend) -> None:
    messages = [{"role": "user", "content": QUESTION[0].content}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 6, "temperature": 0, "x": 1}
    response = post(base_url, "/chat/completions", body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "chat.completion" and data["model"] == MODEL
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    n_prompt = len(hf.encode(hf.render_chat(QUESTION), templated=True))
    used = data["usage"]
    assert used["prompt_tokens"] == n_prompt
    assert 0 < used["completion_tokens"] <= 6
    assert used["total_tokens"] == n_prompt + used["completion_tokens"]


def test_chat_logprobs_are_sorted_log_probabilities(base_url: str) -> None:
    messages = [{"role": "user", "content": "Rate the answer."}]
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 4,
    }
    data = post(base_url, "/chat/completions", body).json()
    content = data["choices"][0]["logprobs"]["content"]
    assert len(content) == data["usage"]["completion_tokens"] > 0
    for entry in content:
        assert entry["logprob"] <= 0.0
        assert entry["bytes"] == list(entry["token"].encode("utf-8"))
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 4 and tops == sorted(tops, reverse=True)
        assert all(t <= 0.0 for t in tops)
        # Greedy decoding picks the most likely token at every step.
        assert entry["logprob"] == pytest.approx(tops[0], abs=1e-4)


def test_completion_echo_logprobs_are_exact(base_url: str, hf: HFBackend) -> None:
    prompt = "Rating: [[7]] the answer is"
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2}
    data = post(base_url, "/completions", body).json()
    choice = data["choices"][0]
    assert choice["text"] == prompt
    logprobs = choice["logprobs"]
    ids = hf.encode(prompt, templated=False)
    assert data["usage"]["prompt_tokens"] == len(logprobs["tokens"]) == len(ids)
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:] == pytest.approx(reference_logprobs(hf, ids), abs=1e-4)
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"][1:])
    # ASCII prompt: each token's offset is where its text starts in the prompt (after BOS).
    texts = logprobs["tokens"][1:]
    assert "".join(texts) == prompt
    assert logprobs["text_offset"][1:] == [len("".join(texts[:i])) for i in range(len(texts))]


def test_completion_echo_with_new_tokens(base_url: str) -> None:
    prompt = "the model"
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 3, "temperature": 0, "echo": True}
    data = post(base_url, "/completions", {**body, "logprobs": 1}).json()
    choice, used = data["choices"][0], data["usage"]
    assert choice["text"].startswith(prompt)
    tokens = choice["logprobs"]["tokens"]
    assert len(tokens) == used["prompt_tokens"] + used["completion_tokens"]
    offsets = choice["logprobs"]["text_offset"]
    assert offsets == sorted(offsets) and offsets[used["prompt_tokens"]] == len(prompt)


def test_stop_string_truncates(base_url: str) -> None:
    body = {"model": MODEL, "prompt": "the model", "max_tokens": 8, "temperature": 0}
    full = post(base_url, "/completions", body).json()["choices"][0]["text"]
    stop = full[3:5]
    cut = post(base_url, "/completions", {**body, "stop": [stop]}).json()["choices"][0]
    assert cut["text"] == full[: full.index(stop)]
    assert cut["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 50},
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": -1},
        {"messages": [{"role": "user", "content": "hi"}]},
    ],
)
def test_bad_requests_get_openai_errors(base_url: str, body: dict[str, Any]) -> None:
    response = post(base_url, "/chat/completions", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and "code" in error


def test_unknown_model_and_route_are_404(base_url: str) -> None:
    body = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
    assert post(base_url, "/chat/completions", body).json()["error"]["code"] == "model_not_found"
    response = httpx.get(f"{base_url}/nope", timeout=10)
    assert response.status_code == 404 and "error" in response.json()


# -- the openai backend against the served model ---------------------------------------------
def test_greedy_generate_matches_hf(base_url: str, hf: HFBackend) -> None:
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12)
    requests = [
        GenerateRequest(QUESTION, sampling),
        GenerateRequest((Message("system", "Be brief."), Message("user", "Rate it.")), sampling),
        GenerateRequest((Message("user", "Explain why the river is long."),), sampling),
    ]
    served = openai_backend(base_url).generate(requests)
    local = [hf.generate([request])[0] for request in requests]
    assert served == local
    assert any(result.text for result in served)


def test_score_matches_hf(base_url: str, hf: HFBackend) -> None:
    requests = [
        ScoreRequest(continuation=" Paris", context="The capital of France is"),
        ScoreRequest(continuation="7]]", context="Rating: [["),
        ScoreRequest(continuation="8]]", context="Rating: [["),
        ScoreRequest(continuation="42", context="Answer: "),
        ScoreRequest(continuation="ity", context="the model"),  # the greedy next token
        ScoreRequest(continuation=" call", context="the answer is"),  # likewise
        ScoreRequest(continuation=" café ✓]]", context="Naïve rating: [["),  # multi-byte
    ]
    served = openai_backend(base_url).score(requests)
    local = hf.score(requests)
    for got, want in zip(served, local, strict=True):
        assert got.logprob == pytest.approx(want.logprob, abs=1e-4)
        assert (got.n_tokens, got.is_greedy) == (want.n_tokens, want.is_greedy)
    assert [r.is_greedy for r in local] == [False, False, False, False, True, True, False]


def test_backend_works_from_threads_and_running_loops(base_url: str) -> None:
    """The engine may call from a worker thread, a notebook from inside an event loop."""
    backend = openai_backend(base_url)
    request = ScoreRequest(continuation="ity", context="the model")
    expected = backend.score([request])
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(backend.score([request])))
    worker.start()
    worker.join(timeout=60)

    async def inside_loop() -> Any:
        return backend.score([request])

    assert box == [expected]
    assert asyncio.run(inside_loop()) == expected


def test_score_falls_back_when_max_tokens_0_is_rejected(hf: HFBackend) -> None:
    """Servers such as older vLLM refuse max_tokens=0; scoring then asks for one new token."""
    app = FastAPI()
    worker = ModelWorker(hf)
    rejected: list[int] = []

    @app.post("/v1/completions")
    def strict(request: CompletionRequest) -> Any:
        if request.max_tokens == 0:
            rejected.append(0)
            error = {"message": "max_tokens must be at least 1", "type": "invalid_request_error"}
            return JSONResponse(status_code=400, content={"error": error})
        return run_completion(worker, request, MODEL)

    requests = [ScoreRequest("7]]", "Rating: [["), ScoreRequest("ity", "the model")]
    with running_server(app) as url:
        served = openai_backend(url).score(requests)
    assert rejected
    for got, want in zip(served, hf.score(requests), strict=True):
        assert got.logprob == pytest.approx(want.logprob, abs=1e-4)
        assert (got.n_tokens, got.is_greedy) == (want.n_tokens, want.is_greedy)


def test_score_rejects_chat_contexts_before_any_request(dead_url: str) -> None:
    request = ScoreRequest(continuation="7]]", context="Rating: [[", messages=QUESTION)
    with pytest.raises(InputError, match="cannot score chat-templated"):
        openai_backend(dead_url).score([request])


@pytest.mark.timing
def test_unreachable_endpoint_is_one_line_backend_error(dead_url: str, secret_key: str) -> None:
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        openai_backend(dead_url).generate([GenerateRequest(QUESTION)])
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith(f"openai endpoint {dead_url} unreachable")
    assert "\n" not in message and secret_key not in message


def test_unknown_model_and_route_are_input_errors(base_url: str, secret_key: str) -> None:
    with pytest.raises(InputError, match="404") as model_error:
        openai_backend(base_url, model="no-such-model").generate([GenerateRequest(QUESTION)])
    wrong_route = base_url.removesuffix("/v1") + "/nope/v1"
    with pytest.raises(InputError, match="404") as route_error:
        openai_backend(wrong_route).score([ScoreRequest("7]]", "Rating: [[")])
    for error in (model_error.value, route_error.value):
        assert "\n" not in str(error) and secret_key not in str(error) + repr(error)


def test_api_key_is_sent_but_never_shown(
    hf: HFBackend, secret_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVALHARNESS_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("EVALHARNESS_TEST_WRONG_KEY", "sk-wrong")
    with running_server(create_app(hf, MODEL, api_key=secret_key)) as url:
        backend = openai_backend(url)
        result = backend.generate([GenerateRequest(QUESTION, SamplingParams(max_new_tokens=2))])
        assert result[0].n_prompt_tokens > 0
        with pytest.raises(InputError, match=r"rejected the API key from \$EVALHARNESS_TEST_WRONG"):
            openai_backend(url, api_key_env="EVALHARNESS_TEST_WRONG_KEY").generate(
                [GenerateRequest(QUESTION)]
            )
        # A variable named but unset fails before any request, naming the variable.
        with pytest.raises(InputError, match=r"\$EVALHARNESS_TEST_UNSET_KEY is not set") as caught:
            openai_backend(url, api_key_env="EVALHARNESS_TEST_UNSET_KEY")
        # No variable named: a server other than api.openai.com gets no key, and says so.
        with pytest.raises(InputError, match="sent only to api.openai.com") as implicit:
            openai_backend(url, api_key_env=None).generate([GenerateRequest(QUESTION)])
    shown = [str(caught.value), repr(caught.value), repr(backend), str(backend.identity)]
    shown += [str(implicit.value)]
    assert not any(secret_key in text for text in shown)
    assert backend.identity == {
        "backend": "openai",
        "name": f"openai:{MODEL}",
        "model": MODEL,
        "base_url": url,
    }


def test_rate_limits_and_server_errors_are_retried_with_backoff(hf: HFBackend) -> None:
    """429 twice, then 503, then the real server: the backend retries and gets the answer."""
    app = create_app(hf, MODEL)
    failures = iter([(429, "rate limited"), (429, "rate limited"), (503, "overloaded")])
    attempts: list[int] = []

    @app.middleware("http")
    async def flaky(request: Any, call_next: Any) -> Any:
        if request.url.path.endswith("/chat/completions"):
            attempts.append(1)
            failure = next(failures, None)
            if failure is not None:
                status, message = failure
                return JSONResponse(
                    {"error": {"message": message, "type": "server_error", "code": None}},
                    status_code=status,
                    headers={"retry-after-ms": "10"},
                )
        return await call_next(request)

    with running_server(app) as url:
        request = GenerateRequest(QUESTION, SamplingParams(max_new_tokens=4))
        expected = hf.generate([request])[0]
        result = openai_backend(url, max_retries=3).generate([request])[0]
    assert len(attempts) == 4
    assert result.text == expected.text


def test_retries_give_up_with_a_one_line_error(hf: HFBackend) -> None:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def always_busy() -> JSONResponse:
        return JSONResponse(
            {"error": {"message": "overloaded", "type": "server_error", "code": None}},
            status_code=503,
            headers={"retry-after-ms": "10"},
        )

    with running_server(app) as url, pytest.raises(BackendError) as caught:
        openai_backend(url, max_retries=2).generate(
            [GenerateRequest(QUESTION, SamplingParams(max_new_tokens=4))]
        )
    assert "503" in str(caught.value) or "overloaded" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_raw_completion_stops_and_matches_across_backends(base_url: str, hf: HFBackend) -> None:
    """CompleteRequest (no chat template): the same greedy text locally and over HTTP."""
    sampling = SamplingParams(temperature=0.0, max_new_tokens=24)
    free = CompleteRequest("intent category: card", sampling)
    (unstopped,) = hf.complete([free])
    assert unstopped.n_generated_tokens > 0
    # Stop at a piece of the free-running text: the result is the text before it.
    middle = len(unstopped.text) // 2
    stop = unstopped.text[middle : middle + 3]
    assert len(stop) == 3
    stopped_request = CompleteRequest("intent category: card", sampling, stop=(stop,))
    (local,) = hf.complete([stopped_request])
    assert local.finish_reason == "stop"
    assert local.text == unstopped.text[: unstopped.text.index(stop)].strip()
    (remote,) = openai_backend(base_url).answer([stopped_request])
    assert remote.text == local.text  # type: ignore[union-attr]


def test_shared_prefix_cache_gives_the_same_greedy_text(hf: HFBackend) -> None:
    """Few-shot prompts sharing a long prefix: prefilled once, answers unchanged."""
    demos = "text: top up my card\nintent: top_up\n" * 60
    prompts = [demos + f"text: {q}\nintent:" for q in ("lost card", "refund", "change pin")]
    requests = [CompleteRequest(p, SamplingParams(max_new_tokens=6)) for p in prompts]
    encoded = [hf.encode(p, templated=False) for p in prompts]
    assert len(shared_prefix(encoded)) >= PREFIX_CACHE_MIN_TOKENS  # the cached path is taken
    together = hf.complete(requests)
    alone = [hf.generate_token_ids([e], SamplingParams(max_new_tokens=6))[0] for e in encoded]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.n_prompt_tokens for r in together] == [len(e) for e in encoded]


# -- API keys: the client's, and the server's --------------------------------------------------
@pytest.mark.parametrize(
    "base_url",
    [
        "http://api.openai.com/v1",  # plain http would expose the key on the wire
        "https://api.openai.com.example.test/v1",
        "https://api.openai.com@example.test/v1",
        "https://example.test/v1?api.openai.com",
        "http://127.0.0.1:8000/v1",
    ],
)
def test_openai_key_goes_to_api_openai_com_only(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert api_key_for(base_url, None) == PLACEHOLDER_KEY
    assert api_key_for(base_url, "OPENAI_API_KEY") == "sk-openai"  # named: sent anywhere
    for openai_url in ("https://api.openai.com/v1", "https://API.openai.com:443/v1/"):
        assert api_key_for(openai_url, None) == "sk-openai"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert api_key_for("https://api.openai.com/v1", None) == PLACEHOLDER_KEY


def test_cli_sends_openai_key_to_another_base_url_only_when_named(
    hf: HFBackend,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--base-url` to a server that records the Authorization header of every request."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("MY_KEY", "sk-meant-for-this-server")
    app = create_app(hf, MODEL)
    received: list[str] = []

    @app.middleware("http")
    async def record(request: Any, call_next: Any) -> Any:
        received.append(request.headers.get("authorization", ""))
        return await call_next(request)

    row = '{"context": "Rating: [[", "continuation": "7]]"}'
    rows = write_lines(tmp_path / "rows.jsonl", [row])
    score = ["score", "--model", f"openai:{MODEL}", "--input", str(rows)]
    with running_server(app) as url:
        code, out, err = run_cli(capsys, *score, "--base-url", url)
        assert code == 0, err
        implicit, received[:] = list(received), []
        code, out, err = run_cli(capsys, *score, "--base-url", url, "--api-key-env", "MY_KEY")
        assert code == 0, err
    assert implicit and set(implicit) == {f"Bearer {PLACEHOLDER_KEY}"}
    assert received and set(received) == {"Bearer sk-meant-for-this-server"}
    assert "sk-" not in out + err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("example.test", False),
        ("localhost.example.test", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_refuses_a_reachable_host_without_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked before the model loads: a missing checkpoint shows how far each command got."""
    missing = ["--model", f"hf:{tmp_path / 'no-model'}"]
    code, out, err = run_cli(capsys, "serve", *missing, "--host", "0.0.0.0")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--host 0.0.0.0" in err and "--api-key-env" in err
    assert "no-model" not in err  # refused before the model was even looked for

    code, _, err = run_cli(capsys, "serve", *missing, "--host", "0.0.0.0", "--insecure")
    assert "warning" in err and "without an API key" in err
    assert "no-model" in err and "--insecure to serve" not in err  # it went on to the model

    monkeypatch.setenv("EVALHARNESS_TEST_SERVE_KEY", SECRET)
    keyed = ["--api-key-env", "EVALHARNESS_TEST_SERVE_KEY"]
    for host in ("0.0.0.0", "127.0.0.1"):
        code, _, err = run_cli(capsys, "serve", *missing, "--host", host, *keyed)
        assert "no-model" in err and "warning" not in err and SECRET not in err

    monkeypatch.setenv("EVALHARNESS_TEST_SERVE_KEY", "")
    code, out, err = run_cli(capsys, "serve", *missing, *keyed)
    assert code == 2 and err.count("\n") == 1
    assert "$EVALHARNESS_TEST_SERVE_KEY is not set or is empty" in err


# -- sampling seeds, ports and shutdown, as users run `serve` -----------------------------------
def test_sampling_without_a_seed_is_fresh_and_with_a_seed_reproducible(base_url: str) -> None:
    """As OpenAI and vLLM: no `seed` draws afresh on every request (it was seed 0 each time, so
    every request got the same text); the same `seed` gives the same text again. Non-streamed
    and streamed, completions and chat."""
    completion = {"model": MODEL, "prompt": "the river", "max_tokens": 16, "temperature": 1.0}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Why?"}], "max_tokens": 16}

    def completion_text(body: dict[str, Any]) -> str:
        return post(base_url, "/completions", body).json()["choices"][0]["text"]

    def chat_text(body: dict[str, Any]) -> str:
        return post(base_url, "/chat/completions", body).json()["choices"][0]["message"]["content"]

    def streamed_chat_text(body: dict[str, Any]) -> str:
        with httpx.stream(
            "POST", f"{base_url}/chat/completions", json={**body, "stream": True}, timeout=60
        ) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
        return "".join(
            choice["delta"].get("content") or ""
            for choice in (json.loads(e)["choices"][0] for e in events if json.loads(e)["choices"])
        )

    for ask, body in (
        (completion_text, completion),
        (chat_text, chat),  # temperature left out: OpenAI's default, 1
        (streamed_chat_text, chat),
    ):
        fresh = [ask(body) for _ in range(3)]
        assert len(set(fresh)) > 1, (ask.__name__, fresh)
        seeded = [ask({**body, "seed": 11}) for _ in range(2)]
        assert seeded[0] == seeded[1], ask.__name__
        assert seeded[0] != ask({**body, "seed": 12}), ask.__name__


def test_an_invalid_or_busy_port_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before the model is even looked for (the checkpoint here does not exist)."""
    missing = ["--model", f"hf:{tmp_path / 'no-model'}"]
    for port in ("99999", "0", "-1"):
        code, out, err = run_cli(capsys, "serve", *missing, "--port", port)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and f"--port {port}:" in err and "65535" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_cli(capsys, "serve", *missing, "--port", str(port))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"127.0.0.1:{port} is already in use" in err
    assert "no-model" not in err


@pytest.mark.timing
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_serve_during_a_long_generation(
    tiny_model_dir: Path, stop: signal.Signals
) -> None:
    """A streamed answer of 4000 tokens (minutes on a CPU) is being generated when the signal
    comes: the server ends it at once, tells the client with an error event, and exits within
    seconds, where it used to wait for the whole answer."""
    port = free_port()
    process = spawn_cli(
        "serve", "--model", f"hf:{tiny_model_dir}", "--port", str(port), "--served-name", MODEL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url)
        generating = threading.Event()
        events: list[dict[str, Any]] = []
        body = {"model": MODEL, "messages": CHAT, "max_tokens": 4000, "temperature": 0}

        def read_stream() -> None:
            """Greedy decoding of this prompt never reaches EOS before 4000 tokens."""
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=300
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
                        if any(c["delta"].get("content") for c in events[-1].get("choices", [])):
                            generating.set()

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert generating.wait(timeout=120), "the generation never started"
        process.send_signal(stop)
        process.wait(timeout=STOP_BOUND_S)  # TimeoutExpired: it waited for the answer
        reader.join(timeout=STOP_BOUND_S)
        assert not reader.is_alive()
        finishes = [c["finish_reason"] for e in events for c in e.get("choices", [])]
        assert not any(finishes), "the answer ran to its end"
        assert "shutting down" in events[-1]["error"]["message"]
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


#: Seconds from the signal to the server's exit. Stopping takes well under a second (the next
#: forward pass, then uvicorn's close); the bound leaves room for a loaded CI machine.
STOP_BOUND_S = 30

#: A chat whose greedy answer on the tiny model runs to any length (no EOS).
CHAT = [{"role": "user", "content": "Explain why the river is long."}]
