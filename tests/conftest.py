"""Shared fixtures: offline hub, a tiny locally built chat model, real shared data when present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Hub look-ups stall ~50 s before failing offline; tests never download anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(relative: str) -> Path:
    """The one way tests read ../shared/data: skip cleanly when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data {relative} not present")
    return path


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Torch on one thread while the test runs. The tiny model's ops are far too small to
    gain from a second thread, and on a busy machine each op's threads wait for each other
    (a tiny-model training run took several times longer with torch's two threads).
    `OMP_NUM_THREADS` too, or each model load sets one thread per core again
    (`backends.local_model`)."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~100k-parameter Llama with a locally trained tokenizer and a chat template."""
    from tiny_models import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own store and file-hash memo; the converted default model is shared."""
    monkeypatch.setenv("EVALHARNESS_STORE", str(tmp_path / "store.sqlite"))


@pytest.fixture()
def ieee_float32_after() -> Iterator[None]:
    """Put back PyTorch's float32 matmul precision after a test that trains on CUDA.

    Training turns TF32 on process-wide (`trainers.precision.use_tf32`, as transformers'
    `tf32=True`); the CUDA-vs-CPU float32 agreement tests that run later in the same pytest
    process (`make test-gpu` runs every GPU file in one) assume the IEEE default.
    """
    import torch

    settings = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [getattr(s, "fp32_precision", None) for s in settings]
    legacy = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    for setting, value in zip(settings, before, strict=True):
        if value is not None:
            setting.fp32_precision = value
    if before[0] is None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = legacy
