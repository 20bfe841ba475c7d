"""The identity of a live model (`EvalCallback`, `evaluate(model, ...)`): its weights hashed
where they lie (`evalharness.store.weights_fingerprint`), without a copy of every tensor."""

from __future__ import annotations

import hashlib
import tracemalloc
from typing import Any

import pytest
import torch
from tiny_models import build_model, build_tokenizer

from evalharness.backends.in_memory import InMemoryHFBackend
from evalharness.store.weights_fingerprint import CHUNK_WORDS, nh_lanes, state_sha256


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


def previous_state_sha256(model: Any) -> str:
    """The digest earlier versions stored for a model in memory (every tensor's bytes copied)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        digest.update(data.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def nudged(tensor: torch.Tensor, index: int) -> None:
    """Move one element of `tensor` to the next representable value (one ulp)."""
    flat = tensor.data.view(-1)
    flat[index] = torch.nextafter(flat[index], flat[index] + 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_host_models_digest_is_the_one_stored_before(dtype: torch.dtype, tokenizer: Any) -> None:
    """Runs already stored for a model on the CPU keep their cache."""
    model = build_model(tokenizer).to(dtype)
    assert state_sha256(model) == previous_state_sha256(model)


def test_hashing_a_host_model_copies_no_tensor() -> None:
    """Host memory stays flat: the bytes go to SHA-256 as they lie (before: a copy each)."""
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 8))
    largest = 1024 * 1024 * 4
    tracemalloc.start()
    try:
        state_sha256(model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < largest / 8


def test_the_callbacks_identity_follows_one_weight_and_nothing_else(tokenizer: Any) -> None:
    model = build_model(tokenizer)

    def identity() -> str:
        return InMemoryHFBackend(model, tokenizer, name="m").identity_hash

    first = identity()
    assert identity() == first  # the same weights evaluated again: the same identity
    weight = model.model.layers[0].mlp.down_proj.weight
    before = weight.detach().clone()
    nudged(weight, 7)
    changed = identity()
    assert changed != first
    with torch.no_grad():
        weight.copy_(before)
    assert identity() == first


def test_nh_lanes_are_a_function_of_the_bytes() -> None:
    """Equal bytes give equal lanes (a copy, another layout of the same values)."""
    tensor = torch.randn(3 * CHUNK_WORDS + 5)
    lanes = nh_lanes(tensor)
    assert lanes.shape == (4, 2) and lanes.dtype == torch.int64
    assert torch.equal(nh_lanes(tensor.clone()), lanes)
    matrix = torch.randn(64, 48)
    assert torch.equal(nh_lanes(matrix.t().contiguous().t()), nh_lanes(matrix))


@pytest.mark.parametrize("index", [0, 1, CHUNK_WORDS // 2, CHUNK_WORDS - 1, CHUNK_WORDS, -1])
def test_nh_lanes_change_with_any_one_weight(index: int) -> None:
    """One ulp anywhere, in either half of a chunk, at a chunk edge or in the padded tail."""
    tensor = torch.randn(2 * CHUNK_WORDS + 3)
    lanes = nh_lanes(tensor)
    changed = tensor.clone()
    nudged(changed, index % changed.numel())
    assert not torch.equal(nh_lanes(changed), lanes)


def test_nh_lanes_take_any_dtype_size_and_view() -> None:
    odd = torch.randn(7, dtype=torch.bfloat16)  # 14 bytes: not a whole number of words
    flags = torch.tensor([True, False, True])
    scalar = torch.tensor(3.0)
    base = torch.randn(11, dtype=torch.bfloat16)
    unaligned = base[1:9]  # starts 2 bytes into its storage
    for tensor in (odd, flags, scalar, unaligned, torch.empty(0)):
        assert torch.equal(nh_lanes(tensor), nh_lanes(tensor.clone()))
    assert nh_lanes(torch.empty(0)).shape == (0, 2)
    swapped = odd.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert not torch.equal(nh_lanes(swapped), nh_lanes(odd))  # position matters, not just sums


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_lanes_are_the_cpus_and_the_digest_follows_the_weights(
    tokenizer: Any,
) -> None:
    """NH is exact integer arithmetic: the GPU computes the CPU's lanes. The digest of a model
    on the GPU is stable and follows its weights (it differs from the host digest by design)."""
    tensor = torch.randn(2 * CHUNK_WORDS + 3, dtype=torch.bfloat16)
    assert torch.equal(nh_lanes(tensor.cuda()).cpu(), nh_lanes(tensor))
    model = build_model(tokenizer).cuda()
    first = state_sha256(model)
    assert state_sha256(model) == first
    nudged(model.model.layers[0].mlp.down_proj.weight, 3)
    assert state_sha256(model) != first
