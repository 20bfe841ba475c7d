"""The fused backward's schedules, the chunk plan they follow, `auto`'s rule table, and the
chunked path's 16-bit head, against a float64 reference (Triton under TRITON_INTERPRET=1)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported (see test_kernels)
pytest.importorskip("triton")

from test_kernels import make_inputs, relative_error, run_with_grads  # noqa: E402

from evalharness.kernels import backward_plan, chunked, dispatch  # noqa: E402
from evalharness.kernels.dispatch import token_stats  # noqa: E402
from evalharness.kernels.reference import token_stats_reference  # noqa: E402

# Chunks small enough that SHAPE (N=24, D=40, V=389) takes 3 row chunks and 5 vocabulary
# chunks, three of them in borrowed weight-gradient rows and two in the dedicated buffer.
SHAPE = {"n_rows": 24, "dim": 40, "vocab": 389}
SMALL_CHUNKS = {
    "BLOCK_N": 16,
    "BLOCK_V": 128,
    "BLOCK_D": 64,
    "SPLIT_SIZE": 256,
    "ROW_CHUNK": 8,
    "VOCAB_CHUNK": 128,
    "WORKSPACE_ELEMENTS": 24 * 64,
}
SCHEDULES = list(backward_plan.SCHEDULES)


@pytest.fixture
def poisoned_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN-filled gradient buffers: an element the backward forgets to write cannot pass."""
    from evalharness.kernels import triton_backward

    def poisoned(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(triton_backward, "new_gradient", poisoned)


def test_small_chunks_exercise_every_scratch_kind() -> None:
    chunks = backward_plan.vocab_chunks(
        SHAPE["vocab"],
        SHAPE["dim"],
        SHAPE["n_rows"],
        chunk=SMALL_CHUNKS["VOCAB_CHUNK"],
        workspace_elements=SMALL_CHUNKS["WORKSPACE_ELEMENTS"],
    )
    kinds = [c.scratch_offset is None for c in chunks]
    assert kinds.count(False) >= 2 and kinds.count(True) >= 2


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_output_and_option_backpropagates_like_float64(
    schedule: str, dtype: torch.dtype, poisoned_gradients: None
) -> None:
    """Bias, soft-cap, ignored rows, entropy, KL and the upstream gradients of all three
    outputs, through several row and vocabulary chunks of both schedules."""
    inputs = make_inputs(20, **SHAPE)
    inputs["targets"][[0, 9, 23]] = -100
    options = dict(softcap=6.0)
    stats, grads = run_with_grads(
        "triton", inputs, dtype, schedule=schedule, blocks=SMALL_CHUNKS, **options
    )
    expected, expected_grads = run_with_grads("reference", inputs, torch.float64, **options)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    for name in ("logprobs", "entropy", "kl"):
        assert relative_error(getattr(stats, name), getattr(expected, name)) < tolerance, name
    for name, grad in grads.items():
        assert grad.dtype == dtype, name
        assert torch.isfinite(grad).all(), name
        assert relative_error(grad, expected_grads[name]) < tolerance, name


def test_one_pass_keeps_its_last_chunks_in_the_unwritten_hidden_gradient(
    poisoned_gradients: None,
) -> None:
    """With a workspace smaller than the hidden gradient, the one-pass schedule's dedicated
    chunks live in the hidden gradient's buffer, which it writes only at the end."""
    blocks = SMALL_CHUNKS | {"WORKSPACE_ELEMENTS": SHAPE["n_rows"] * 32}
    spare = SHAPE["n_rows"] * SHAPE["dim"]
    plan = backward_plan.vocab_chunks(
        SHAPE["vocab"], SHAPE["dim"], SHAPE["n_rows"], chunk=128, workspace_elements=spare
    )
    assert 0 < backward_plan.dedicated_elements(plan, SHAPE["n_rows"]) <= spare
    inputs = make_inputs(26, **SHAPE)
    # bf16: a float32 hidden gradient is its own accumulator and lends nothing
    _, grads = run_with_grads("triton", inputs, torch.bfloat16, schedule="one-pass", blocks=blocks)
    _, expected = run_with_grads("reference", inputs, torch.float64)
    for name, grad in grads.items():
        assert relative_error(grad, expected[name]) < 1e-2, name


def _gradients_rounded_like_the_old_kernel(
    inputs: dict[str, torch.Tensor], weights: tuple[float, float, float]
) -> dict[str, torch.Tensor]:
    """What the atomics kernel computed for bf16 inputs: dL/dlogits from float32 logits rounded
    to bf16, products summed exactly, each gradient rounded to bf16 once (float64 here)."""
    rounded = {
        k: v.to(torch.bfloat16).double() if v.is_floating_point() else v for k, v in inputs.items()
    }
    logits = (rounded["hidden"] @ rounded["weight"].T + rounded["bias"]).requires_grad_()
    ref_logits = rounded["ref_hidden"] @ rounded["ref_weight"].T
    valid = rounded["targets"] != -100
    log_p = torch.log_softmax(logits, -1)
    logprobs = log_p.gather(1, rounded["targets"].clamp_min(0)[:, None]).squeeze(1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    ref_log_p = torch.log_softmax(ref_logits, -1)
    kl = (ref_log_p.exp() * (ref_log_p - log_p)).sum(-1)
    signs = torch.randn(len(valid), generator=torch.Generator().manual_seed(7)).double()
    a, b, c = weights
    loss = (signs * torch.where(valid, a * logprobs + b * entropy + c * kl, 0.0)).sum()
    (grad_z,) = torch.autograd.grad(loss, logits)
    grad_z = grad_z.to(torch.bfloat16).double()
    return {
        "hidden": (grad_z @ rounded["weight"]).to(torch.bfloat16),
        "weight": (grad_z.T @ rounded["hidden"]).to(torch.bfloat16),
        "bias": grad_z.sum(0).to(torch.bfloat16),
    }


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_bfloat16_gradient_error_is_no_worse_than_the_atomics_kernel(schedule: str) -> None:
    """Max error against float64 of each bf16 gradient stays within that of the old kernel's
    arithmetic (one bf16 rounding of dL/dlogits, float32 sums, one rounding of the result)."""
    inputs = make_inputs(21, **SHAPE)
    weights = (1.0, 0.3, 0.7)
    _, grads = run_with_grads(
        "triton", inputs, torch.bfloat16, schedule=schedule, blocks=SMALL_CHUNKS, weights=weights
    )
    _, exact = run_with_grads("reference", inputs, torch.float64, weights=weights)
    old = _gradients_rounded_like_the_old_kernel(inputs, weights)
    for name, grad in grads.items():
        ours = (grad.double() - exact[name]).abs().max()
        theirs = (old[name].double() - exact[name]).abs().max()
        # float32 sums vs float64 ones, and a different summation order, move a rounding or two
        assert ours <= theirs * 1.25 + 1e-6, (name, float(ours), float(theirs))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_backward_is_bit_identical_run_to_run(schedule: str) -> None:
    inputs = make_inputs(22, **SHAPE)
    first = run_with_grads("triton", inputs, torch.float32, schedule=schedule, blocks=SMALL_CHUNKS)
    second = run_with_grads("triton", inputs, torch.float32, schedule=schedule, blocks=SMALL_CHUNKS)
    for name, grad in first[1].items():
        assert torch.equal(grad, second[1][name]), name


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("trainable", [("weight",), ("bias",), ("hidden", "bias")])
def test_partial_gradient_requests(schedule: str, trainable: tuple[str, ...]) -> None:
    """Only the gradients autograd asks for are computed (frozen hidden states, a bias-only
    head, a frozen weight with a trainable bias), each still exact."""
    inputs = make_inputs(23, **SHAPE)
    grads = {}
    for path, dtype in (("triton", torch.float32), ("reference", torch.float64)):
        leaves = {
            name: inputs[name].to(dtype).detach().clone().requires_grad_(name in trainable)
            for name in ("hidden", "weight", "bias")
        }
        args = (leaves["hidden"], leaves["weight"], inputs["targets"], leaves["bias"])
        if path == "reference":
            stats = token_stats_reference(*args, entropy=True, dtype=dtype)
        else:
            stats = token_stats(
                *args, entropy=True, impl="triton", schedule=schedule, blocks=SMALL_CHUNKS
            )
        (stats.logprobs + 0.5 * stats.entropy).sum().backward()
        grads[path] = {name: leaf.grad for name, leaf in leaves.items()}
    for name in ("hidden", "weight", "bias"):
        if name in trainable:
            assert relative_error(grads["triton"][name], grads["reference"][name]) < 1e-5, name
        else:
            assert grads["triton"][name] is None, name


def test_unknown_schedule_is_refused() -> None:
    inputs = make_inputs(24, n_rows=4, vocab=50)
    with pytest.raises(ValueError, match="unknown backward schedule"):
        token_stats(
            inputs["hidden"], inputs["weight"], inputs["targets"], impl="triton", schedule="fast"
        )  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the chunk plan


@pytest.mark.parametrize(
    ("vocab", "dim", "n_rows", "chunk", "workspace"),
    [
        (128256, 4096, 8192, 1024, 1 << 20),
        (128256, 4096, 32768, 1024, 1 << 20),
        (32000, 576, 2048, 1024, 1 << 20),
        (389, 40, 24, 128, 24 * 64),
        (50, 8, 1000, 1024, 10),  # workspace smaller than one column: one column at a time
    ],
)
def test_vocab_chunks_cover_the_vocabulary_and_never_overwrite_finished_rows(
    vocab: int, dim: int, n_rows: int, chunk: int, workspace: int
) -> None:
    chunks = backward_plan.vocab_chunks(
        vocab, dim, n_rows, chunk=chunk, workspace_elements=workspace
    )
    assert chunks[0].start == 0 and chunks[-1].stop == vocab
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.stop == after.start
    for c in chunks:
        assert 1 <= c.cols <= chunk
        if c.scratch_offset is not None:
            # after the rows this chunk writes, and inside the [V, D] buffer
            assert c.scratch_offset >= c.stop * dim
            assert c.scratch_offset + n_rows * c.cols <= vocab * dim
    own = backward_plan.dedicated_elements(chunks, n_rows)
    assert own <= max(workspace, n_rows)


def test_llama_sized_plan_borrows_almost_everything() -> None:
    """At D=4096, V=128256 the dedicated buffer stays within its 1 MiB (bf16) and nearly all
    columns go through full-width chunks."""
    for n_rows in (8192, 32768):
        chunks = backward_plan.vocab_chunks(128256, 4096, n_rows)
        own = backward_plan.dedicated_elements(chunks, n_rows)
        assert own * 2 <= 1024**2
        full = sum(c.cols for c in chunks if c.cols == backward_plan.VOCAB_CHUNK)
        assert full / 128256 > 0.9


def test_row_chunks_fit_in_the_weight_gradient() -> None:
    rows = backward_plan.row_chunk_rows(8192, 4096, borrow_weight_gradient=True, chunk=1024)
    assert rows == 1024
    assert backward_plan.row_chunk_rows(8192, 576, borrow_weight_gradient=True, chunk=1024) == 576
    own = backward_plan.row_chunk_rows(8192, 4096, borrow_weight_gradient=False, chunk=1024)
    assert own == backward_plan.ROW_CHUNK_OWN_BUFFER
    assert backward_plan.row_chunk_rows(3, 4096, borrow_weight_gradient=True, chunk=1024) == 3


# --------------------------------------------------------------------------- auto's rule


def test_auto_rule_table() -> None:
    cuda, cpu, mps = torch.device("cuda"), torch.device("cpu"), torch.device("mps")
    choose = dispatch.auto_choice
    assert choose(cuda, 8192, triton_available=True) == dispatch.Choice("triton", "two-pass")
    assert choose(cuda, 32768, triton_available=True) == dispatch.Choice("triton", "one-pass")
    assert choose(cuda, 8192, triton_available=False).path == "chunked"
    assert choose(cpu, 8192, triton_available=True).path == "chunked"
    assert choose(mps, 8192, triton_available=True).path == "chunked"
    assert dispatch.kernel_schedule(100) == "two-pass"
    assert dispatch.kernel_schedule(1 << 20) == "one-pass"
    # every rule names a real path and schedule, and each device's thresholds are distinct
    for rule in dispatch.AUTO_RULES:
        assert rule.path in ("triton", "chunked", "reference")
        assert rule.schedule in backward_plan.SCHEDULES
    keys = [(r.device, r.min_rows) for r in dispatch.AUTO_RULES]
    assert len(keys) == len(set(keys))


def test_auto_rule_changes_reach_the_dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing the table is all a GPU measurement needs to do."""
    monkeypatch.setattr(
        dispatch,
        "AUTO_RULES",
        (
            dispatch.AutoRule("cuda", 0, "triton", "one-pass"),
            dispatch.AutoRule("cuda", 4096, "chunked"),
        ),
    )
    cuda = torch.device("cuda")
    assert dispatch.resolve_implementation("auto", cuda, 100) == "triton"
    assert dispatch.resolve_implementation("auto", cuda, 5000) == "chunked"
    assert dispatch.kernel_schedule(100) == "one-pass"


# --------------------------------------------------------------------------- chunked, 16-bit


def test_chunked_uses_gpu_sized_chunks_on_cuda() -> None:
    cuda = torch.device("cuda")
    for vocab in (32000, 128256):
        assert 512 <= chunked.default_chunk_rows(vocab, cuda) <= 1024
    assert chunked.default_chunk_rows(128256, torch.device("cpu")) == 65  # CPU bound unchanged


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_16bit_head_path(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path (16-bit head, float32 products and sums) run on the CPU, where torch
    widens the operands instead of using out_dtype: same numbers, every option."""
    monkeypatch.setattr(chunked, "keeps_16bit_head", lambda hidden, weight: True)
    heads = []
    original = chunked._Head.__init__

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        heads.append(self)

    monkeypatch.setattr(chunked._Head, "__init__", spy)
    inputs = make_inputs(25)
    inputs["targets"][[2, 30]] = -100
    stats, grads = run_with_grads("chunked", inputs, dtype, softcap=5.0)
    assert heads and all(head.weight.dtype == dtype for head in heads)  # no float32 head copy
    expected, expected_grads = run_with_grads("reference", inputs, torch.float64, softcap=5.0)
    for name in ("logprobs", "entropy", "kl"):
        assert relative_error(getattr(stats, name), getattr(expected, name)) < 1e-2, name
    for name, grad in grads.items():
        assert grad.dtype == dtype
        assert relative_error(grad, expected_grads[name]) < 1e-2, name
    # against the same rounded inputs only float32 accumulation is left in the forward
    rounded = {k: v.to(dtype).double() if v.is_floating_point() else v for k, v in inputs.items()}
    same, _ = run_with_grads("reference", rounded, torch.float64, softcap=5.0)
    assert relative_error(stats.logprobs, same.logprobs) < 1e-5


def test_float32_scoring_is_exact_and_training_uses_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward multiplies float32 exactly (ieee) when no backward will follow, even for a
    model whose parameters require grad scored under no_grad, and on tf32 tensor cores when
    one will (the backward always does)."""
    from evalharness.kernels import triton_scoring

    seen: list[bool] = []
    real = triton_scoring._forward

    class Spy:
        def __getitem__(self, grid):  # type: ignore[no-untyped-def]
            def launch(*args, **kwargs):  # type: ignore[no-untyped-def]
                seen.append(kwargs["IEEE"])
                return real[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(triton_scoring, "_forward", Spy())
    inputs = make_inputs(27, n_rows=8, vocab=100)
    weight = inputs["weight"].clone().requires_grad_()
    with torch.no_grad():
        token_stats(inputs["hidden"], weight, inputs["targets"], impl="triton")
    token_stats(inputs["hidden"], weight.detach(), inputs["targets"], impl="triton")
    token_stats(inputs["hidden"], weight, inputs["targets"], impl="triton")
    token_stats(inputs["hidden"].bfloat16(), weight.bfloat16(), inputs["targets"], impl="triton")
    assert seen == [True, True, False, False]


# --------------------------------------------------------------------------- the benchmark


def _scoring_benchmark():  # type: ignore[no-untyped-def]
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))  # it imports `measure` from beside itself
    spec = importlib.util.spec_from_file_location("scoring_benchmark", folder / "scoring.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_cli_contract_and_goals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`--json PATH` names the output (make test-gpu calls `--device cuda --quick --json PATH`),
    `--quick` is refused off CUDA, and the goals compare the kernel with CCE and Liger."""
    bench = _scoring_benchmark()
    out = tmp_path / "scoring.json"
    args = bench.parse_args(
        ["--device", "cpu", "--n", "8", "--d", "4", "--v", "16", "--json", str(out)]
    )
    assert args.out == out
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--quick"])

    def row(path: str, mode: str, time_ms: float, peak: float) -> dict[str, object]:
        return {"path": path, "n": 8192, "d": 4096, "v": 128256, "mode": mode, "status": "ok"} | {
            "time_ms": time_ms,
            "extra_peak_mib": peak,
        }

    rows = [
        row("triton", "forward", 15.0, 7.0),
        row("cce", "forward", 15.9, 0.1),
        row("triton", "backward", 80.0, 1068.0),
        row("cce", "backward", 155.3, 1068.0),
        row("liger", "backward", 72.4, 1191.0),
    ]
    goals = {(g["mode"], g["measure"], g["peer"]): g["passed"] for g in bench.build_goals(rows)}
    assert goals == {
        ("forward", "time_ms", "cce"): True,
        ("backward", "time_ms", "cce"): True,
        ("backward", "time_ms", "liger"): False,
        ("backward", "extra_peak_mib", "cce"): True,
    }
