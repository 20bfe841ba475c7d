"""The device and dtype rule every model path shares (`evalharness.backends.devices`), checked on
the CPU with the accelerator's presence simulated: which device `auto` picks, what `dtype=auto`
means there, and the one-line errors for devices this machine lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evalharness.backends import devices
from evalharness.errors import InputError


def _pretend_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 2) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_is_the_cpu_without_an_accelerator() -> None:
    if devices.accelerator_type() is not None:
        pytest.skip("this machine has an accelerator")
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device(None) == torch.device("cpu")
    # accelerate names a CPU launch's process devices `cpu:N`: still the host.
    assert devices.resolve_device_name("cpu:1") == "cpu"


def test_auto_is_the_gpu_when_one_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch)
    assert devices.resolve_device("auto").type == "cuda"
    assert devices.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match=r"--device cuda:2: this process sees 2 CUDA"):
        devices.resolve_device("cuda:2")


def test_asking_for_a_missing_gpu_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA device is visible"):
        devices.resolve_device("cuda")
    with pytest.raises(InputError, match="is not a device; use auto"):
        devices.resolve_device("gpu0")
    with pytest.raises(InputError, match="--device-map 'everywhere'"):
        devices.parse_device_map("everywhere")


def _checkpoint(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    ("config", "on_gpu"),
    [
        ({"dtype": "bfloat16"}, "bfloat16"),
        ({"torch_dtype": "float16"}, "float16"),
        ({"text_config": {"torch_dtype": "bfloat16"}}, "bfloat16"),
        ({}, "float32"),
    ],
)
def test_auto_dtype_is_the_checkpoints_on_an_accelerator_and_float32_on_the_cpu(
    tmp_path: Path, config: dict, on_gpu: str
) -> None:
    directory = _checkpoint(tmp_path, config)
    assert devices.resolve_dtype("auto", torch.device("cuda", 0), directory) == on_gpu
    assert devices.resolve_dtype("auto", torch.device("cpu"), directory) == "float32"
    assert devices.resolve_dtype("bfloat16", torch.device("cpu"), directory) == "bfloat16"


def test_placement_loads_straight_onto_the_device() -> None:
    assert devices.placement(torch.device("cuda", 1), None) == {"device_map": {"": "cuda:1"}}
    assert devices.placement(torch.device("cuda", 0), "auto") == {"device_map": "auto"}
