"""Token scoring paths (Triton under the interpreter, chunked PyTorch) against a float64 reference.

Shapes are small and blocks large because each interpreted Triton program costs ~1.5 ms; the
shapes are still chosen so that N, V and D are not multiples of any block size.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

# Triton decides between compiling and interpreting when a kernel is decorated, so the variable
# must be set before the kernel module is imported (the dispatcher imports it lazily).
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from evalharness.kernels.dispatch import (  # noqa: E402
    resolve_implementation,
    token_logprobs,
    token_stats,
)
from evalharness.kernels.reference import token_stats_reference  # noqa: E402

PATHS = ["triton", "chunked"]
SMALL_BLOCKS = {"BLOCK_N": 16, "BLOCK_V": 128, "BLOCK_D": 32, "SPLIT_SIZE": 256}


def make_inputs(
    seed: int,
    n_rows: int = 45,
    dim: int = 40,
    vocab: int = 777,
    *,
    greedy_share: float = 0.3,
) -> dict[str, torch.Tensor]:
    """Random hidden states and head; a share of targets set to the argmax to test `is_argmax`."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_rows, dim, generator=generator)
    weight = torch.randn(vocab, dim, generator=generator) / dim**0.5 * 3
    bias = torch.randn(vocab, generator=generator) * 0.1
    targets = torch.randint(0, vocab, (n_rows,), generator=generator)
    greedy_rows = torch.rand(n_rows, generator=generator) < greedy_share
    targets[greedy_rows] = (hidden @ weight.T + bias).argmax(-1)[greedy_rows]
    ref_hidden = torch.randn(n_rows, dim + 8, generator=generator)
    ref_weight = torch.randn(vocab, dim + 8, generator=generator) / dim**0.5 * 3
    return dict(
        hidden=hidden,
        weight=weight,
        bias=bias,
        targets=targets,
        ref_hidden=ref_hidden,
        ref_weight=ref_weight,
    )


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.detach().double().abs().max().clamp_min(1e-12)
    return float((actual.detach().double() - expected.detach().double()).abs().max() / scale)


@pytest.fixture
def poisoned_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fill the kernel's output and gradient buffers with NaN / -1 so an unwritten element
    cannot pass."""
    from evalharness.kernels import triton_backward, triton_scoring

    def poisoned(shape: int | tuple[int, ...], dtype: torch.dtype, device: torch.device):
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(
            shape if isinstance(shape, tuple) else (shape,), fill, dtype=dtype, device=device
        )

    monkeypatch.setattr(triton_scoring, "new_output", poisoned)
    monkeypatch.setattr(triton_backward, "new_gradient", poisoned)


def run_with_grads(
    impl: str,
    inputs: dict[str, torch.Tensor],
    dtype: torch.dtype,
    *,
    weights: tuple[float, float, float] = (1.0, 0.3, 0.7),
    **options: object,
) -> tuple[object, dict[str, torch.Tensor]]:
    """Scores plus gradients of `a*sum(logprobs) + b*sum(entropy) + c*sum(kl)` (random signs)."""
    leaves = {
        name: inputs[name].to(dtype).detach().requires_grad_()
        for name in ("hidden", "weight", "bias")
    }
    ref = {"ref_hidden": inputs["ref_hidden"].to(dtype), "ref_weight": inputs["ref_weight"]}
    ref["ref_weight"] = ref["ref_weight"].to(dtype)
    if impl == "reference":
        stats = token_stats_reference(
            leaves["hidden"], leaves["weight"], inputs["targets"], leaves["bias"],
            entropy=True, dtype=torch.float64, **ref, **options,
        )  # fmt: skip
    else:
        stats = token_stats(
            leaves["hidden"], leaves["weight"], inputs["targets"], leaves["bias"],
            entropy=True, impl=impl, **ref, **options,
        )  # fmt: skip
    signs = torch.randn(len(inputs["targets"]), generator=torch.Generator().manual_seed(7))
    a, b, c = weights
    loss = (signs * (a * stats.logprobs + b * stats.entropy + c * stats.kl)).sum()
    loss.backward()
    return stats, {name: leaf.grad for name, leaf in leaves.items()}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("impl", PATHS)
def test_forward_and_backward_match_float64_reference(
    impl: str, seed: int, poisoned_outputs: None
) -> None:
    inputs = make_inputs(seed)
    inputs["targets"][[3, 17, 44]] = -100
    stats, grads = run_with_grads(impl, inputs, torch.float32)
    expected, expected_grads = run_with_grads("reference", inputs, torch.float64)
    for name in ("logprobs", "entropy", "kl"):
        actual = getattr(stats, name)
        assert actual.dtype == torch.float32 and torch.isfinite(actual).all(), name
        assert relative_error(actual, getattr(expected, name)) < 1e-5, name
    assert torch.equal(stats.is_argmax, expected.is_argmax)
    assert stats.is_argmax.sum() > 5  # the greedy rows are recognised, not just the others
    for name, grad in grads.items():
        assert relative_error(grad, expected_grads[name]) < 1e-5, name


@pytest.mark.parametrize("impl", PATHS)
def test_bfloat16_inputs_stay_within_one_percent(impl: str, poisoned_outputs: None) -> None:
    inputs = make_inputs(2)
    stats, grads = run_with_grads(impl, inputs, torch.bfloat16)
    exact, exact_grads = run_with_grads("reference", inputs, torch.float64)
    assert stats.logprobs.dtype == torch.float32
    for name in ("logprobs", "entropy", "kl"):
        assert relative_error(getattr(stats, name), getattr(exact, name)) < 1e-2, name
    for name, grad in grads.items():
        assert grad.dtype == torch.bfloat16
        assert relative_error(grad, exact_grads[name]) < 1e-2, name
    # Against the same bf16-rounded inputs the only error left is float32 accumulation.
    rounded = {
        name: value.to(torch.bfloat16).double() if value.is_floating_point() else value
        for name, value in inputs.items()
    }
    same_inputs, _ = run_with_grads("reference", rounded, torch.float64)
    assert relative_error(stats.logprobs, same_inputs.logprobs) < 1e-5


@pytest.mark.parametrize("impl", PATHS)
def test_ragged_batch_masks_padding_and_scores_only_real_tokens(
    impl: str, poisoned_outputs: None
) -> None:
    """Three sequences of different lengths right-padded to one width, as a trainer batches."""
    lengths, width, dim, vocab = [11, 4, 8], 13, 24, 300
    inputs = make_inputs(3, n_rows=len(lengths) * width, dim=dim, vocab=vocab)
    targets = inputs["targets"].view(len(lengths), width).clone()
    for row, length in enumerate(lengths):
        targets[row, length:] = -100
    inputs["targets"] = targets.flatten()
    stats, grads = run_with_grads(impl, inputs, torch.float32)
    expected, expected_grads = run_with_grads("reference", inputs, torch.float64)
    padding = inputs["targets"] == -100
    for name in ("logprobs", "entropy", "kl"):
        assert torch.all(getattr(stats, name)[padding] == 0), name
        assert relative_error(getattr(stats, name), getattr(expected, name)) < 1e-5
    assert not stats.is_argmax[padding].any()
    assert torch.all(grads["hidden"][padding] == 0)
    assert grads["hidden"][~padding].abs().sum(-1).min() > 0
    assert relative_error(grads["weight"], expected_grads["weight"]) < 1e-5
    per_sequence = stats.logprobs.view(len(lengths), width).sum(-1)
    assert torch.allclose(
        per_sequence, expected.logprobs.view(len(lengths), width).sum(-1), rtol=1e-5
    )


@pytest.mark.parametrize("impl", PATHS)
def test_custom_ignore_index(impl: str) -> None:
    inputs = make_inputs(4, n_rows=20, vocab=150)
    inputs["targets"][::4] = -1
    out = token_logprobs(
        inputs["hidden"], inputs["weight"], inputs["targets"], ignore_index=-1, impl=impl
    )
    ref = token_stats_reference(
        inputs["hidden"], inputs["weight"], inputs["targets"], ignore_index=-1,
        dtype=torch.float64,
    )  # fmt: skip
    assert torch.all(out[::4] == 0)
    assert relative_error(out, ref.logprobs) < 1e-5


@pytest.mark.parametrize("impl", PATHS)
def test_softcap_forward_and_backward(impl: str) -> None:
    inputs = make_inputs(5, n_rows=20, vocab=300)
    inputs["weight"] = inputs["weight"] * 4  # logits large enough for the cap to matter
    stats, grads = run_with_grads(impl, inputs, torch.float32, softcap=3.0)
    expected, expected_grads = run_with_grads("reference", inputs, torch.float64, softcap=3.0)
    uncapped, _ = run_with_grads("reference", inputs, torch.float64)
    assert relative_error(expected.logprobs, uncapped.logprobs) > 0.1
    assert relative_error(stats.logprobs, expected.logprobs) < 1e-5
    assert relative_error(stats.kl, expected.kl) < 1e-5
    for name, grad in grads.items():
        assert relative_error(grad, expected_grads[name]) < 1e-5, name


def test_triton_block_shapes_do_not_change_results() -> None:
    """Odd N, V and D against two different tilings (one with D smaller than a block)."""
    inputs = make_inputs(6, n_rows=37, dim=40, vocab=389)
    small = token_stats(
        inputs["hidden"], inputs["weight"], inputs["targets"], inputs["bias"],
        entropy=True, impl="triton", blocks=SMALL_BLOCKS,
    )  # fmt: skip
    large = token_stats(
        inputs["hidden"], inputs["weight"], inputs["targets"], inputs["bias"],
        entropy=True, impl="triton",
    )  # fmt: skip
    assert torch.allclose(small.logprobs, large.logprobs, rtol=1e-6, atol=1e-6)
    # Entropy is lse - E[z], a difference of two ~10-sized numbers: float32 leaves ~1e-6.
    assert torch.allclose(small.entropy, large.entropy, rtol=1e-5, atol=1e-5)
    assert torch.equal(small.is_argmax, large.is_argmax)


def test_triton_reads_strided_hidden_states() -> None:
    """Positions gathered from a `[B, T, D]` tensor arrive with strides, not contiguous."""
    inputs = make_inputs(7, n_rows=30, vocab=200)
    wide = torch.randn(30, 3 * 40)
    wide[:, 40:80] = inputs["hidden"]
    strided = wide[:, 40:80]
    assert not strided.is_contiguous()
    out = token_logprobs(strided, inputs["weight"], inputs["targets"], impl="triton")
    ref = token_logprobs(inputs["hidden"], inputs["weight"], inputs["targets"], impl="reference")
    assert relative_error(out, ref) < 1e-5


def test_triton_reads_a_strided_bias() -> None:
    """A bias sliced out of a wider tensor (stride 2) scores and backpropagates like a
    contiguous one: the kernel indexes the bias by vocabulary column alone."""
    inputs = make_inputs(8, n_rows=20, vocab=200)
    wide = torch.randn(200, 2)
    wide[:, 0] = inputs["bias"]
    bias = wide[:, 0].detach().requires_grad_()
    assert not bias.is_contiguous()
    out = token_logprobs(inputs["hidden"], inputs["weight"], inputs["targets"], bias, impl="triton")
    out.sum().backward()
    expected_bias = inputs["bias"].clone().requires_grad_()
    ref = token_logprobs(
        inputs["hidden"], inputs["weight"], inputs["targets"], expected_bias, impl="reference"
    )
    ref.sum().backward()
    assert relative_error(out, ref) < 1e-5
    assert relative_error(bias.grad, expected_bias.grad) < 1e-5


# Rows 2^30 elements apart (3 of them) and a head whose 300 rows span 2^31 elements, in one
# lazily allocated bfloat16 buffer (4 GiB of address space, a few pages of it touched). Run in a
# child process: an int32 offset that wraps reads outside the buffer and kills the process.
WIDE_OFFSETS_SCRIPT = """
import torch
from evalharness.kernels.dispatch import token_stats
from evalharness.kernels.reference import token_stats_reference
n, d, v = 3, 64, 300
row_stride, head_stride = 2**30, 2**31 // (v - 1) + 1
g = torch.Generator().manual_seed(0)
rows = torch.randn(n, d, generator=g).bfloat16()
head = (torch.randn(v, d, generator=g) / 8).bfloat16()
targets = torch.randint(0, v, (n,), generator=g)
head_start = (n - 1) * row_stride + d  # the head's rows come after the last hidden row
storage = torch.empty(head_start + (v - 1) * head_stride + d, dtype=torch.bfloat16)
hidden = storage.as_strided((n, d), (row_stride, 1)).copy_(rows).requires_grad_()
weight = storage.as_strided((v, d), (head_stride, 1), head_start).copy_(head).requires_grad_()
out = token_stats(hidden, weight, targets, impl="triton").logprobs
out.sum().backward()
leaves = [rows.clone().requires_grad_(), head.clone().requires_grad_()]
ref = token_stats_reference(*leaves, targets, dtype=torch.float64).logprobs
ref.sum().backward()
pairs = [(out, ref), (hidden.grad, leaves[0].grad), (weight.grad, leaves[1].grad)]
print(max(float((a.double() - b.double()).abs().max() / b.abs().max()) for a, b in pairs))
"""


def test_triton_addresses_inputs_past_two_to_the_31_elements() -> None:
    """Offsets row * stride beyond int32: the last positions of long sequences of a [B, T, D]
    tensor (T * D apart), or a head spanning more than 2^31 elements, score correctly."""
    done = subprocess.run(
        [sys.executable, "-c", WIDE_OFFSETS_SCRIPT],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:] or f"exit status {done.returncode}"
    assert float(done.stdout.strip().splitlines()[-1]) < 2e-2


@pytest.mark.parametrize("impl", PATHS)
def test_scores_are_batch_invariant(impl: str) -> None:
    """A sequence's scores are bit-identical alone or inside a larger batch.

    Under TRITON_INTERPRET `tl.dot` is a numpy matmul over the whole tile, and on some CPUs
    (AMD EPYC's BLAS paths) a row's summation order depends on where in the tile it sits, so
    the Triton case puts the sequence at a tile boundary (BLOCK_N = 32 there). On a GPU each
    row's dot product does not depend on its tile neighbours.
    """
    start = 32 if impl == "triton" else 20
    inputs = make_inputs(8, n_rows=40, vocab=500)
    alone = token_stats(
        inputs["hidden"][:7], inputs["weight"], inputs["targets"][:7], entropy=True, impl=impl
    )
    others = make_inputs(9, n_rows=40, vocab=500)
    batch_hidden = torch.cat(
        [others["hidden"][:start], inputs["hidden"][:7], others["hidden"][start:]]
    )
    batch_targets = torch.cat(
        [others["targets"][:start], inputs["targets"][:7], others["targets"][start:]]
    )
    batched = token_stats(batch_hidden, inputs["weight"], batch_targets, entropy=True, impl=impl)
    window = slice(start, start + 7)
    assert torch.equal(batched.logprobs[window], alone.logprobs)
    assert torch.equal(batched.entropy[window], alone.entropy)
    assert torch.equal(batched.is_argmax[window], alone.is_argmax)


def test_empty_input_gives_empty_output() -> None:
    for impl in PATHS:
        out = token_logprobs(
            torch.zeros(0, 8), torch.randn(50, 8), torch.zeros(0, dtype=torch.long), impl=impl
        )
        assert out.shape == (0,)


def test_bad_inputs_name_the_argument() -> None:
    hidden, weight = torch.randn(4, 8), torch.randn(50, 8)
    with pytest.raises(ValueError, match="targets must lie in"):
        token_logprobs(hidden, weight, torch.tensor([1, 2, 50, 3]))
    with pytest.raises(ValueError, match="targets must lie in"):
        token_logprobs(hidden, weight, torch.tensor([1, -5, 2, 3]))
    with pytest.raises(ValueError, match="weight must be"):
        token_logprobs(hidden, torch.randn(50, 9), torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="targets must be an integer"):
        token_logprobs(hidden, weight, torch.zeros(4))
    with pytest.raises(ValueError, match="unknown scoring implementation"):
        token_logprobs(hidden, weight, torch.tensor([1, 2, 3, 4]), impl="fast")  # type: ignore[arg-type]


def test_dispatcher_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_implementation("auto", cpu) == "chunked"
    assert resolve_implementation("auto", torch.device("cuda")) == "triton"
    monkeypatch.setenv("EVALHARNESS_SCORING_IMPL", "reference")
    assert resolve_implementation("auto", cpu) == "reference"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="needs TRITON_INTERPRET=1"):
        resolve_implementation("triton", cpu)


@pytest.mark.parametrize("impl", PATHS)
def test_frozen_head_gets_no_weight_gradient(impl: str) -> None:
    """A LoRA-style frozen LM head: only the hidden states need (and get) a gradient."""
    inputs = make_inputs(10, n_rows=24, vocab=300)
    hidden = inputs["hidden"].clone().requires_grad_()
    weight = inputs["weight"].clone()
    token_stats(hidden, weight, inputs["targets"], impl=impl, entropy=True).entropy.sum().backward()
    reference_hidden = inputs["hidden"].double().requires_grad_()
    token_stats_reference(
        reference_hidden, weight.double(), inputs["targets"], entropy=True, dtype=torch.float64
    ).entropy.sum().backward()
    assert weight.grad is None
    assert relative_error(hidden.grad, reference_hidden.grad) < 1e-5


@pytest.mark.parametrize("impl", [*PATHS, "reference"])
def test_tied_top_logits_count_only_the_first_index_as_greedy(impl: str) -> None:
    """Two vocabulary rows with identical weights (in different vocabulary splits) tie exactly:
    like `torch.argmax` (and lm-eval's `is_greedy`), only the lower index is the argmax.

    The twin sits at the same column of its tile (515 = 3 + SPLIT_SIZE 512): under
    TRITON_INTERPRET a column's summation order can depend on its place in the tile (see the
    batch-invariance test), which would break the tie before the kernel sees it.
    """
    inputs = make_inputs(11, n_rows=6, vocab=700)
    weight = inputs["weight"]
    weight[515] = weight[3] = inputs["hidden"][0] * 3  # row 0's top logit, twice
    inputs["hidden"][1] = inputs["hidden"][0]
    targets = torch.tensor([3, 515, 1, 2, 5, 8])
    stats = token_stats(inputs["hidden"], weight, targets, impl=impl)
    assert stats.is_argmax[0] and not stats.is_argmax[1]
    assert torch.allclose(stats.logprobs[0], stats.logprobs[1])


@pytest.mark.parametrize("softcap", [None, 4.0])
@pytest.mark.parametrize("impl", PATHS)
def test_logprob_only_gradients(impl: str, softcap: float | None) -> None:
    """The common training case (no entropy or KL term), which the chunked path runs in place."""
    inputs = make_inputs(12, n_rows=40, vocab=450)
    inputs["targets"][::5] = -100
    signs = torch.randn(40, generator=torch.Generator().manual_seed(3))
    grads = {}
    for path, dtype in ((impl, torch.float32), ("reference", torch.float64)):
        leaves = [
            inputs[k].to(dtype).detach().clone().requires_grad_()
            for k in ("hidden", "weight", "bias")
        ]
        if path == "reference":
            stats = token_stats_reference(
                *leaves[:2], inputs["targets"], leaves[2], softcap=softcap, dtype=dtype
            )
        else:
            stats = token_stats(
                *leaves[:2], inputs["targets"], leaves[2], softcap=softcap, impl=path
            )
        (signs * stats.logprobs).sum().backward()
        grads[path] = [leaf.grad for leaf in leaves]
    for ours, expected in zip(grads[impl], grads["reference"], strict=True):
        assert relative_error(ours, expected) < 1e-5
