"""Log-likelihood requests batched across samples, with shared contexts packed into one row.

The yardsticks: each request scored alone in its own row (the layout the batching replaces,
and lm-evaluation-harness's), and lm-eval's own `HFLM` on the same requests, question by
question. Batching must change no number beyond float rounding (1e-5) and no is_greedy, while
a multiple-choice question's context is read once and a run hands every sample's requests to
the backend together.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from test_score_cli import greedy_rows

from evalharness.backends import hf_scoring, load_backend
from evalharness.backends.hf import HFBackend
from evalharness.backends.hf_score_rows import plan_rows
from evalharness.backends.spec import AUTO_BATCH_ROWS, batch_size_option, parse_model_spec
from evalharness.engine.requests import ScoreRequest, ScoreResult
from evalharness.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
#: lm-eval's log-softmax over full logits sums in another order than the fused head.
LM_EVAL_TOLERANCE = 1e-4
WORDS = [
    "the",
    "water",
    "river",
    "city",
    "capital",
    "question",
    "answer",
    "explain",
    "why",
    "because",
    "good",
    "bad",
]


def questions(n: int, seed: int = 0) -> list[ScoreRequest]:
    """`n` four-choice questions of varied lengths: four requests sharing each context."""
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14)))
        context = f"Question: {question}?\nAnswer:"
        for _ in range(4):
            choice = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            requests.append(ScoreRequest(continuation=" " + choice, context=context))
    return requests


def hf_backend(model_dir: Path, batch_size: int | str = 8) -> HFBackend:
    spec = parse_model_spec(f"hf:{model_dir}", dtype="float32", batch_size=batch_size)
    backend = load_backend(spec)
    assert isinstance(backend, HFBackend)
    return backend


def alone(backend: HFBackend, requests: list[ScoreRequest]) -> list[ScoreResult]:
    """Every request in a forward of its own: one row, no padding, no packing."""
    return [backend.score_pairs([backend.encode_pair(r)], pack=False)[0] for r in requests]


def assert_same_scores(ours: list[ScoreResult], reference: list[ScoreResult]) -> None:
    assert len(ours) == len(reference)
    for number, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        assert abs(mine.logprob - theirs.logprob) <= TOLERANCE, (number, mine, theirs)
        assert (mine.is_greedy, mine.n_tokens) == (theirs.is_greedy, theirs.n_tokens), number


def count_forwards(backend: HFBackend) -> list[int]:
    """Widths (padded tokens per row) of every decoder forward from now on."""
    widths: list[int] = []
    backend._decoder().register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True,
    )
    return widths


@pytest.fixture(scope="module")
def mixed_requests(tiny_model_dir: Path) -> list[ScoreRequest]:
    """Questions, lone requests and continuations the model would pick (is_greedy true)."""
    greedy = greedy_rows(tiny_model_dir, ["the a of", "Question: why", "the water"])
    lone = [ScoreRequest(continuation=t, context=c) for c, t in greedy]
    lone.append(ScoreRequest(continuation="the water is good", context=""))
    return questions(6) + lone + questions(2, seed=1)


@pytest.fixture(scope="module")
def scored_alone(tiny_model_dir: Path, mixed_requests: list[ScoreRequest]) -> list[ScoreResult]:
    return alone(hf_backend(tiny_model_dir), mixed_requests)


@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
def test_batched_scores_equal_each_request_scored_alone(
    tiny_model_dir: Path,
    mixed_requests: list[ScoreRequest],
    scored_alone: list[ScoreResult],
    batch_size: int | str,
) -> None:
    backend = hf_backend(tiny_model_dir, batch_size)
    batched = backend.score(mixed_requests)
    assert backend._packing is True  # the shared contexts went through packed rows
    assert any(r.is_greedy for r in batched) and not all(r.is_greedy for r in batched)
    assert_same_scores(batched, scored_alone)


def test_a_question_reads_its_context_once_and_questions_share_forwards(
    tiny_model_dir: Path,
) -> None:
    backend = hf_backend(tiny_model_dir, batch_size=8)
    requests = questions(20)
    backend.score(requests[:8])  # the one-time packing check runs here
    widths = count_forwards(backend)
    backend.score(requests)
    # 20 questions, one packed row each, 8 rows a forward: 3 forwards (one per choice and
    # question, 80 or more, before).
    assert len(widths) == 3
    pairs = [backend.encode_pair(r) for r in requests]
    longest_row = max(
        len(pairs[q * 4][0]) + sum(len(pairs[q * 4 + c][1]) - 1 for c in range(4))
        for q in range(20)
    )
    assert widths[0] == longest_row  # longest first: the context once, then every choice


def test_scoring_forwards_keep_no_kv_cache(tiny_model_dir: Path) -> None:
    """A cache would hold every layer's keys and values for the whole batch, memory that an
    automatic batch size would rather spend on rows."""
    backend = hf_backend(tiny_model_dir, batch_size="auto")
    caches: list[Any] = []
    backend._decoder().register_forward_hook(
        lambda module, args, output: caches.append(output.past_key_values)
    )
    backend.score(questions(3))
    assert caches and all(cache is None for cache in caches)


def test_a_model_that_ignores_the_packed_mask_scores_each_row_alone(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose attention drops the 4-D mask would let one choice read another: the
    packing check sees it and the backend falls back to one row per request."""
    real_inputs = hf_scoring.model_inputs

    def mask_ignored(batch: Any, pad_id: int, dtype: Any) -> dict[str, Any]:
        import torch

        inputs = real_inputs(batch, pad_id, dtype)
        width = inputs["input_ids"].shape[1]
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        inputs["attention_mask"] = (
            torch.zeros((width, width), dtype=dtype)
            .masked_fill(~causal, torch.finfo(dtype).min)[None, None]
            .expand(len(batch), 1, width, width)
        )
        return inputs

    monkeypatch.setattr(hf_scoring, "model_inputs", mask_ignored)
    backend = hf_backend(tiny_model_dir, batch_size=4)
    requests = questions(5)
    scores = backend.score(requests)
    assert backend._packing is False
    assert_same_scores(scores, alone(backend, requests))


def sliding_window_model(directory: Path, tokenizer_dir: Path, window: int) -> Path:
    """A tiny Mistral whose attention sees only the last `window` inputs."""
    import torch
    from tiny_models import tiny_config
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_config(
        MistralConfig,
        len(tokenizer),
        32,
        layers=2,
        sliding_window=window,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_rows_wider_than_a_sliding_window_are_not_packed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A 4-D mask replaces the model's sliding window: a packed row wider than the window would
    let a later choice read context that its own row's window hides. Such questions go one
    row per choice; those that fit the window stay packed."""
    window = 40
    backend = hf_backend(sliding_window_model(tmp_path / "mistral", tiny_model_dir, window))
    requests = questions(8)
    rows = plan_rows([backend.encode_pair(r) for r in requests], pack=True)
    assert {row.width > window for row in rows} == {True, False}  # both kinds are here
    assert_same_scores(backend.score(requests), alone(backend, requests))
    assert backend._packing is True


def test_auto_batch_size_halves_its_budget_when_a_batch_runs_out_of_memory(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    backend = hf_backend(tiny_model_dir, batch_size="auto")
    assert backend.auto_batch and backend.batch_size == AUTO_BATCH_ROWS
    requests = questions(10)
    expected = alone(backend, requests)
    backend._auto_tokens = 4096
    monkeypatch.setattr(hf_scoring, "AUTO_MIN_TOKENS", 16)
    real_batch = backend._score_batch
    widest = plan_rows([backend.encode_pair(r) for r in requests], pack=True)[0].width
    memory = 2 * widest  # padded tokens a forward can hold
    tried: list[int] = []

    def small_memory(batch: Any, results: Any) -> None:
        padded = len(batch) * max(row.width for row in batch)
        tried.append(padded)
        if padded > memory:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        real_batch(batch, results)

    monkeypatch.setattr(backend, "_score_batch", small_memory)
    assert_same_scores(backend.score(requests), expected)
    assert backend._auto_tokens is not None and widest <= backend._auto_tokens <= memory
    assert max(tried) > memory and tried[-1] <= memory

    fixed = hf_backend(tiny_model_dir, batch_size=8)  # a fixed batch size is not retried
    monkeypatch.setattr(fixed, "_score_batch", small_memory)
    with pytest.raises(torch.OutOfMemoryError):
        fixed.score(requests)


def test_batch_size_auto_is_an_option_and_anything_else_a_one_line_error() -> None:
    assert batch_size_option("auto") == "auto" and batch_size_option("16") == 16
    spec = parse_model_spec("hf:some/model", batch_size="auto")
    assert (spec.auto_batch, spec.batch_size) == (True, AUTO_BATCH_ROWS)
    assert not parse_model_spec("hf:some/model", batch_size=4).auto_batch
    with pytest.raises(InputError, match=r"^--batch-size 'big' is not a number or 'auto'$"):
        batch_size_option("big")


def test_a_run_hands_every_samples_requests_to_the_backend_together(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The 20-question example task at batch size 8: one scoring call of all 80 requests
    (ten calls of 8, two questions each, before)."""
    from evalharness import evaluate

    backend = hf_backend(tiny_model_dir, batch_size=8)
    calls: list[int] = []
    score = backend.score

    def counted(requests: Any) -> list[ScoreResult]:
        calls.append(len(requests))
        return score(requests)

    backend.score = counted  # type: ignore[method-assign]
    spec = parse_model_spec(f"hf:{tiny_model_dir}", dtype="float32", batch_size=8)
    folder = REPO / "tasks" / "declarative" / "examples" / "mc"
    evaluate(
        spec,
        tasks=[str(folder)],
        store=tmp_path / "s.sqlite",
        runner_options={"use_backend": backend},
    )
    assert calls == [80]


def test_scores_agree_with_lm_eval_question_by_question(tiny_model_dir: Path) -> None:
    pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    requests = questions(15, seed=2)
    ours = hf_backend(tiny_model_dir, batch_size="auto").score(requests)
    lm = HFLM(pretrained=str(tiny_model_dir), dtype="float32", device="cpu", batch_size=8)
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=(r.context, r.continuation), idx=i)
        for i, r in enumerate(requests)
    ]
    theirs = lm.loglikelihood(instances, disable_tqdm=True)
    for question in range(15):
        for choice in range(4):
            index = question * 4 + choice
            logprob, greedy = theirs[index]
            assert abs(ours[index].logprob - logprob) <= LM_EVAL_TOLERANCE, (question, choice)
            assert ours[index].is_greedy is greedy, (question, choice)
