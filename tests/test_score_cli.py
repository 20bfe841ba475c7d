"""`evalharness score`: lm-evaluation-harness's loglikelihood numbers, input errors, order, ids.

The yardstick is lm-eval itself (`HFLM` on the same tiny checkpoint, fp32, CPU): every row's
summed log-probability must agree to 1e-4, with the same `is_greedy` and the same number of
continuation tokens as lm-eval scores.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, write_lines

from evalharness.engine import loglikelihood as scoring_cli

TOLERANCE = 1e-4
#: On the real 49k-vocabulary model float32 rounding (a different summation order over the
#: vocabulary than lm-eval's full log-softmax) adds up per token: 10 tokens differed by 1.3e-4
#: on an AMD EPYC, so the bound there is per continuation token.
TOLERANCE_PER_TOKEN = 2e-5

#: Rows covering lm-eval's tokenisation rules: trailing spaces of the context move to the
#: continuation, an empty context conditions on BOS, several rows share one context (the
#: backend's shared-prefix path), multi-token and non-ASCII continuations.
ROWS = [
    ("The capital of France is", " paris"),
    ("The capital of France is ", "paris"),  # trailing space: same tokens as the row above
    ("one two  ", " three"),  # two trailing spaces
    ("  ", "word"),  # a context of spaces only
    ("", "the water is good"),  # empty context: BOS predicts the first token
    ("Question: why", "\nAnswer because"),
    ("Rating: [[", "7]]"),
    ("Rating: [[", "10]]"),  # shares its context with the rows around it
    ("Rating: [[", "3]]"),
    ("the wat", "er good"),  # continuation starts inside a word
    ("café", "s au lait ☕ 東京 — naïve"),  # multi-byte characters on both sides
    ("the a of", " and"),
    ("20", "25"),
]

#: Contexts the model continues greedily, so some rows have `is_greedy` true.
GREEDY_CONTEXTS = ["the a of", "", "Rating: [[", "Question: why"]


def greedy_rows(model_dir: Path, contexts: list[str], max_tokens: int = 3) -> list[tuple[str, str]]:
    """(context, the model's own greedy continuation), kept to the longest prefix of the greedy
    tokens whose text tokenises back to the same tokens (so the row really is greedy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = []
    for context in contexts:
        prompt = tokenizer(context)["input_ids"]
        sequence = list(prompt)
        with torch.inference_mode():
            for _ in range(max_tokens):
                sequence.append(int(model(torch.tensor([sequence])).logits[0, -1].argmax()))
        new = sequence[len(prompt) :]
        for n in range(len(new), 0, -1):
            text = tokenizer.decode(new[:n])
            if tokenizer(context + text)["input_ids"] == prompt + new[:n]:
                rows.append((context, text))
                break
    return rows


@pytest.fixture(scope="module")
def lm_eval_loglikelihood(tiny_model_dir: Path) -> Any:
    """`rows -> [(logprob, is_greedy, n_continuation_tokens)]` from lm-eval's HFLM."""
    pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_model_dir), dtype="float32", device="cpu", batch_size=4)
    encoded: list[tuple[Any, list[int], list[int]]] = []
    tokens_call = lm._loglikelihood_tokens

    def spy(requests: list[Any], **kwargs: Any) -> Any:
        # lm-eval's own (context tokens, continuation tokens) split, in request order.
        encoded.extend(requests)
        return tokens_call(requests, **kwargs)

    lm._loglikelihood_tokens = spy

    def loglikelihood(rows: list[tuple[str, str]]) -> list[tuple[float, bool, int]]:
        encoded.clear()
        instances = [
            Instance(request_type="loglikelihood", doc={}, arguments=row, idx=i)
            for i, row in enumerate(rows)
        ]
        results = lm.loglikelihood(instances, disable_tqdm=True)
        assert len(encoded) == len(rows)
        return [
            (logprob, greedy, len(continuation))
            for (logprob, greedy), (_, _, continuation) in zip(results, encoded, strict=True)
        ]

    return loglikelihood


def score_rows(
    capsys: pytest.CaptureFixture[str], model_dir: Path, path: Path, *extra: str
) -> list[dict[str, Any]]:
    model = ["--model", f"hf:{model_dir}", "--dtype", "float32"]
    code, out, err = run_cli(capsys, "score", *model, "--input", str(path), *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    # Raw UTF-8 (not \u escapes), so reading non-ASCII input is exercised too.
    return write_lines(path, [json.dumps(row, ensure_ascii=False) for row in rows])


def test_score_agrees_with_lm_eval(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lm_eval_loglikelihood: Any,
) -> None:
    rows = ROWS + greedy_rows(tiny_model_dir, GREEDY_CONTEXTS)
    path = write_rows(tmp_path / "rows.jsonl", [{"context": c, "continuation": t} for c, t in rows])
    # A small batch size: several right-padded batches of different widths, plus shared contexts.
    ours = score_rows(capsys, tiny_model_dir, path, "--batch-size", "3")
    theirs = lm_eval_loglikelihood(rows)

    assert len(ours) == len(rows)
    deltas = []
    for row, mine, (logprob, greedy, n_tokens) in zip(rows, ours, theirs, strict=True):
        assert set(mine) == {"logprob", "n_tokens", "is_greedy"}, row
        deltas.append(abs(mine["logprob"] - logprob))
        assert deltas[-1] <= TOLERANCE, (row, mine, logprob)
        assert mine["is_greedy"] is greedy, (row, mine)
        assert mine["n_tokens"] == n_tokens, (row, mine)
    print(f"max |Δ logprob| vs lm-eval over {len(rows)} rows: {max(deltas):.2e}")
    # Both answers of is_greedy are exercised, so agreeing on it means something.
    assert {greedy for _, greedy, _ in theirs} == {True, False}


@pytest.mark.parametrize(
    ("context", "continuation"),
    [
        # lm-eval moves all trailing whitespace (not only spaces) into the continuation.
        ("Answer:\n\n", "paris"),
        ("Q:\t", "x"),
        # 'sis' + 'tant' merge: lm-eval scores whole[len(context):], even across the boundary.
        ("helpful assis", "tant model"),
        # Text that already starts with the BOS text gets no second BOS.
        ("<|endoftext|>the a of", " and"),
        ("", "<|endoftext|> and"),
    ],
)
def test_score_edge_cases_split_like_lm_eval(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lm_eval_loglikelihood: Any,
    context: str,
    continuation: str,
) -> None:
    path = write_rows(tmp_path / "rows.jsonl", [{"context": context, "continuation": continuation}])
    [mine] = score_rows(capsys, tiny_model_dir, path)
    [(logprob, greedy, n_tokens)] = lm_eval_loglikelihood([(context, continuation)])
    assert abs(mine["logprob"] - logprob) <= TOLERANCE
    assert (mine["n_tokens"], mine["is_greedy"]) == (n_tokens, greedy)


@pytest.mark.parametrize(
    ("lines", "bad_line", "message"),
    [
        (
            ['{"context": "a", "continuation": " b"}', '{"context": "a", "continuation": '],
            2,
            "invalid JSON",
        ),
        (
            ['{"context": "a", "continuation": " b"}', "", '{"context": "a"}'],
            3,
            "missing field 'continuation'",
        ),
        (['{"context": "a", "continuation": ""}'], 1, "field 'continuation' is empty"),
        (['{"context": 3, "continuation": " b"}'], 1, "field 'context' must be a str"),
    ],
)
def test_score_bad_input_names_file_and_line(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[str],
    bad_line: int,
    message: str,
) -> None:
    path = write_lines(tmp_path / "rows.jsonl", lines)
    code, out, err = run_cli(
        capsys, "score", "--model", f"hf:{tiny_model_dir}", "--input", str(path)
    )
    assert code == 2
    assert out == ""  # nothing is scored before the whole file is known to be good
    assert err.count("\n") == 1
    assert f"{path}:{bad_line}: " in err and message in err


def test_score_keeps_input_order_and_ids_from_file_and_stdin(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Lengths in no order, so the longest-first batching inside a call must be undone; one
    # backend call per two batches of two, so results also cross call boundaries.
    monkeypatch.setattr(scoring_cli, "BATCHES_PER_CALL", 2)
    rows: list[dict[str, Any]] = [
        {"id": "short", "context": "the", "continuation": " a"},
        {"id": 7, "context": "Rating: [[", "continuation": "10]] because the answer is good"},
        {"context": "no id here", "continuation": " at all"},
        {"id": "shared-1", "context": "Rating: [[", "continuation": "3]]"},
        {"id": None, "context": "", "continuation": "one two"},
        {"id": "long", "context": "the water " * 12, "continuation": "is good and the river"},
        {"id": {"nested": [1]}, "context": "café", "continuation": " au lait"},
    ]
    path = write_rows(tmp_path / "rows.jsonl", rows)
    forward = score_rows(capsys, tiny_model_dir, path, "--batch-size", "2")
    assert [line.get("id", "-") for line in forward] == [row.get("id", "-") for row in rows]
    assert "id" not in forward[2]
    assert list(forward[0]) == ["id", "logprob", "n_tokens", "is_greedy"]

    # The same rows reversed, from stdin: every row keeps its own numbers.
    reversed_text = "\n".join(json.dumps(row) for row in reversed(rows)) + "\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(reversed_text.encode())))
    backward = score_rows(capsys, tiny_model_dir, Path("-"), "--batch-size", "2")
    assert len(backward) == len(rows)
    for mine, again in zip(forward, reversed(backward), strict=True):
        assert mine.get("id", "-") == again.get("id", "-")
        assert mine["n_tokens"] == again["n_tokens"]
        assert mine["is_greedy"] == again["is_greedy"]
        assert abs(mine["logprob"] - again["logprob"]) <= 1e-5


def test_score_stdin_errors_name_stdin_and_line(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '{"context": "a", "continuation": " b"}\n{"continuation": " b"}\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, err = run_cli(capsys, "score", "--model", f"hf:{tiny_model_dir}", "--input", "-")
    assert (code, out) == (2, "")
    assert err.strip() == "evalharness: error: <stdin>:2: missing field 'context'"


@pytest.mark.slow
def test_score_agrees_with_lm_eval_on_the_default_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same check on a real model (SmolLM2-135M, 49k vocabulary, fp32)."""
    pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evalharness.backends.default_model import converted_dir

    rows = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " Berlin"),
        ("Question: What is 2+2?\nAnswer:", " 4"),
        ("", "Hello world"),
        ("Once upon a time, ", "there was a princess who lived in a castle."),
    ]
    path = write_rows(tmp_path / "rows.jsonl", [{"context": c, "continuation": x} for c, x in rows])
    code, out, _ = run_cli(
        capsys, "score", "--model", "smollm2", "--dtype", "float32", "--input", str(path)
    )
    assert code == 0
    ours = [json.loads(line) for line in out.splitlines()]
    lm = HFLM(pretrained=str(converted_dir()), dtype="float32", device="cpu", batch_size=4)
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=row, idx=i)
        for i, row in enumerate(rows)
    ]
    theirs = lm.loglikelihood(instances, disable_tqdm=True)
    for row, mine, (logprob, greedy) in zip(rows, ours, theirs, strict=True):
        bound = max(TOLERANCE, TOLERANCE_PER_TOKEN * mine["n_tokens"])
        assert abs(mine["logprob"] - logprob) <= bound, (row, mine, logprob)
        assert mine["is_greedy"] is greedy, row
    assert {greedy for _, greedy in theirs} == {True, False}
