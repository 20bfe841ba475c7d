"""`evalharness serve` as real clients use it: the `openai` package streaming, lm-eval's
`local-completions` sending token ids, batches of prompts, `n` choices, concurrent requests.

The yardstick is always another path over the same weights: the non-streamed answer for a
stream, the string prompt for its token ids, lm-eval's own `hf` model for `local-completions`.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from local_server import loaded_backend, running_server

from evalharness.backends.hf import HFBackend
from evalharness.serve import create_app

MODEL = "tiny-chat"
CHAT = [{"role": "user", "content": "Explain why the river is long."}]


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFBackend:
    return loaded_backend(tiny_model_dir)


@pytest.fixture(scope="module")
def app(hf: HFBackend) -> Any:
    return create_app(hf, MODEL)


@pytest.fixture(scope="module")
def base_url(app: Any) -> Iterator[str]:
    with running_server(app) as url:
        yield url


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def run_while_held(worker: Any, threads: list[threading.Thread]) -> int:
    """Start `threads` (one request each) while the worker is held, wait until every request
    is queued, then let them all run and join them; the worker's batch count before they ran."""
    with worker.held():
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while worker.pending() < len(threads) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.pending() == len(threads)
        batches_before = worker.stats.batches
    for thread in threads:
        thread.join(timeout=60)
    return batches_before


def client(base_url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


# -- streaming -----------------------------------------------------------------------------------
def test_openai_chat_stream_equals_the_whole_answer(base_url: str) -> None:
    openai = client(base_url)
    settings = {"model": MODEL, "messages": CHAT, "max_tokens": 24, "temperature": 0}
    whole = openai.chat.completions.create(**settings)
    chunks = list(
        openai.chat.completions.create(
            **settings, stream=True, stream_options={"include_usage": True}
        )
    )
    content = [c.choices[0] for c in chunks if c.choices]
    assert content[0].delta.role == "assistant"
    text = "".join(choice.delta.content or "" for choice in content)
    assert text == whole.choices[0].message.content and text
    assert len([c for c in content if c.delta.content]) > 1  # it really came in pieces
    assert [c.finish_reason for c in content if c.finish_reason] == [whole.choices[0].finish_reason]
    streamed_usage = chunks[-1].usage
    assert streamed_usage is not None and not chunks[-1].choices
    assert (streamed_usage.prompt_tokens, streamed_usage.completion_tokens) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )


def test_completion_stream_stops_where_the_whole_answer_stops(base_url: str) -> None:
    openai = client(base_url)
    settings = {"model": MODEL, "prompt": "the model", "max_tokens": 12, "temperature": 0}
    full = openai.completions.create(**settings).choices[0].text
    stop = full[4:6]
    whole = openai.completions.create(**settings, stop=[stop]).choices[0]
    pieces = list(openai.completions.create(**settings, stop=[stop], stream=True))
    text = "".join(p.choices[0].text for p in pieces)
    assert text == whole.text == full[: full.index(stop)]
    assert stop not in text
    assert pieces[-1].choices[0].finish_reason == whole.finish_reason == "stop"


def test_stream_refuses_what_it_cannot_do_before_streaming(base_url: str) -> None:
    body = {"model": MODEL, "messages": CHAT, "stream": True, "logprobs": True}
    response = post(base_url, "/chat/completions", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "logprobs"
    body = {"model": "other", "prompt": "x", "stream": True}
    assert post(base_url, "/completions", body).status_code == 404


# -- prompts, choices, batches ---------------------------------------------------------------------
def test_token_id_prompts_score_like_the_same_text(base_url: str, hf: HFBackend) -> None:
    texts = ["Rating: [[7]] the answer is", "the model"]
    ids = [hf.encode(text, templated=False) for text in texts]
    echo = {"model": MODEL, "max_tokens": 0, "echo": True, "logprobs": 1}
    by_text = post(base_url, "/completions", {**echo, "prompt": texts}).json()
    by_ids = post(base_url, "/completions", {**echo, "prompt": ids}).json()
    one_id_list = post(base_url, "/completions", {**echo, "prompt": ids[1]}).json()
    assert [c["index"] for c in by_ids["choices"]] == [0, 1]
    for a, b in zip(by_text["choices"], by_ids["choices"], strict=True):
        assert a["text"] == b["text"]
        assert a["logprobs"]["tokens"] == b["logprobs"]["tokens"]
        assert a["logprobs"]["token_logprobs"][1:] == pytest.approx(
            b["logprobs"]["token_logprobs"][1:], abs=1e-5
        )
        assert a["logprobs"]["text_offset"] == b["logprobs"]["text_offset"]
    alone, batched = one_id_list["choices"][0]["logprobs"], by_ids["choices"][1]["logprobs"]
    assert alone["tokens"] == batched["tokens"]  # a flat id list is one prompt, not a batch
    assert alone["token_logprobs"][1:] == pytest.approx(batched["token_logprobs"][1:], abs=1e-5)
    assert by_ids["usage"]["prompt_tokens"] == sum(len(i) for i in ids)


def test_a_stop_token_is_listed_in_logprobs_as_vllm_lists_it(base_url: str, hf: HFBackend) -> None:
    """lm-eval asks for one new token and drops the last one listed: when the model's next token
    is EOS, EOS must be listed, or lm-eval drops a prompt token instead."""
    ids = hf.encode("answer of is", templated=False)  # the tiny model's greedy next token is EOS
    body = {"model": MODEL, "prompt": ids, "max_tokens": 1, "temperature": 0, "echo": True}
    choice = post(base_url, "/completions", {**body, "logprobs": 1}).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == hf.tokenizer.decode(ids, skip_special_tokens=True)  # EOS not in text
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(ids) + 1
    assert logprobs["tokens"][-1] == hf.tokenizer.eos_token
    assert logprobs["token_logprobs"][-1] == pytest.approx(
        max(logprobs["top_logprobs"][-1].values())
    )


@pytest.mark.parametrize(
    ("prompt", "message"),
    [([], "empty"), ([10**9], "outside the vocabulary"), ([[1, 2], []], "empty")],
)
def test_bad_prompts_are_400(base_url: str, prompt: Any, message: str) -> None:
    response = post(base_url, "/completions", {"model": MODEL, "prompt": prompt})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_n_choices(base_url: str) -> None:
    greedy = {"model": MODEL, "messages": CHAT, "max_tokens": 8, "temperature": 0, "n": 3}
    data = post(base_url, "/chat/completions", greedy).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in data["choices"]}) == 1
    one = post(base_url, "/chat/completions", {**greedy, "n": 1}).json()
    assert data["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"]
    sampled = {"model": MODEL, "prompt": ["a", "b"], "max_tokens": 8, "temperature": 1.5}
    data = post(base_url, "/completions", {**sampled, "n": 4, "seed": 3}).json()
    assert [c["index"] for c in data["choices"]] == list(range(8))
    assert len({c["text"] for c in data["choices"][:4]}) > 1  # draws differ
    again = post(base_url, "/completions", {**sampled, "n": 4, "seed": 3}).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in data["choices"]]
    assert post(base_url, "/completions", {**sampled, "n": 0}).status_code == 400


def test_concurrent_requests_share_one_forward(app: Any, base_url: str) -> None:
    """Requests waiting together run as one batch, and each gets what it gets alone."""
    worker = app.state.worker
    prompts = ["the model", "Rating: [[", "the answer is", "Explain", "a b c", "why"]
    body = {"model": MODEL, "max_tokens": 6, "temperature": 0}
    alone = [post(base_url, "/completions", {**body, "prompt": p}).json() for p in prompts]
    answers: dict[int, Any] = {}

    def ask(i: int) -> None:
        answers[i] = post(base_url, "/completions", {**body, "prompt": prompts[i]}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    batches_before = run_while_held(worker, threads)
    assert worker.stats.batches == batches_before + 1
    assert worker.stats.largest_batch >= len(prompts)
    for i, single in enumerate(alone):
        assert answers[i]["choices"][0]["text"] == single["choices"][0]["text"]


def test_a_seeded_draw_does_not_depend_on_what_else_is_waiting(app: Any, base_url: str) -> None:
    """A sampled request with a seed gives the same text whether it runs alone or arrives with
    other sampled requests of the same settings (rows of one batch share a random stream, so
    it must not be batched with them); unseeded requests that wait together still share one
    `generate` call."""
    worker = app.state.worker
    sampled = {"model": MODEL, "max_tokens": 12, "temperature": 1.0}
    seeded = {**sampled, "prompt": "the river", "seed": 5}
    alone = post(base_url, "/completions", seeded).json()["choices"][0]["text"]
    others = [{**sampled, "prompt": p, "seed": 5} for p in ("the model", "why")]
    others += [{**sampled, "prompt": p} for p in ("Explain", "a b c")]
    answers: dict[int, Any] = {}

    def ask(i: int, body: dict[str, Any]) -> None:
        answers[i] = post(base_url, "/completions", body).json()

    bodies = [seeded, *others]
    threads = [threading.Thread(target=ask, args=(i, b)) for i, b in enumerate(bodies)]
    batches_before = run_while_held(worker, threads)
    assert answers[0]["choices"][0]["text"] == alone
    # Three seeded requests alone, the two unseeded ones together.
    assert worker.stats.batches == batches_before + 4


# -- lm-eval's local-completions against lm-eval's hf ------------------------------------------
WORDS = ("river", "model", "answer", "capital", "long", "short", "bright", "quiet", "green")


def _write_lm_eval_tasks(directory: Path) -> None:
    """A multiple-choice task and a rolling-loglikelihood task over data written here."""
    rng = random.Random(7)
    mc_rows = []
    for i in range(24):
        choices = rng.sample(WORDS, 4)
        mc_rows.append(
            {
                "question": f"Question {i}: the {rng.choice(WORDS)} is",
                "choices": choices,
                "answer": rng.randrange(4),
            }
        )
    text_rows = [
        {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))} for _ in range(8)
    ]
    (directory / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc_rows))
    (directory / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in text_rows))
    (directory / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {directory / 'mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (directory / "tiny_rolling.yaml").write_text(
        "task: tiny_rolling\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {directory / 'text.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
        "  - metric: bits_per_byte\n"
    )


def test_lm_eval_local_completions_with_token_ids_equals_lm_eval_hf(
    tmp_path: Path, tiny_model_dir: Path, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _write_lm_eval_tasks(tmp_path)
    tasks = ["tiny_mc", "tiny_rolling"]

    def evaluate(model: str, model_args: str) -> dict[str, Any]:
        manager = TaskManager(include_path=str(tmp_path))
        out = lm_eval.simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=tasks,
            task_manager=manager,
            batch_size=4,
            device="cpu",
            cache_requests=False,
            log_samples=False,
        )
        return out["results"]

    theirs = evaluate("hf", f"pretrained={tiny_model_dir},dtype=float32")
    served = evaluate(
        "local-completions",
        f"model={MODEL},base_url={base_url}/completions,tokenizer={tiny_model_dir},"
        "tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=2,max_retries=1,"
        # HFLM's tokenizer adds BOS by default and the API model's does not: ask for it, so
        # both tokenize alike and the comparison is of the server alone.
        "add_bos_token=True",
    )
    for metric in ("acc,none", "acc_norm,none"):
        assert served["tiny_mc"][metric] == theirs["tiny_mc"][metric], metric
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert served["tiny_rolling"][metric] == pytest.approx(
            theirs["tiny_rolling"][metric], rel=1e-5
        ), metric
