"""The compiled fused kernel on a CUDA GPU against a float64 reference (skipped without CUDA).

The other kernel tests set TRITON_INTERPRET=1 at import, and Triton reads it once, so these
checks run in a fresh interpreter (this file as a script) with the variable removed. Shapes are
not multiples of any tile: N = 1537, D = 320, V = 10007.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

RESULT_PREFIX = "GPU_KERNEL_CHECK "
SHAPE = {"n_rows": 1537, "dim": 320, "vocab": 10007}
# bf16: one rounding of dL/dlogits and of each gradient; float32 training runs on tf32 cores.
TOLERANCE = {"bfloat16": 2e-2, "float32": 1e-2}
FLOAT32_SCORING_TOLERANCE = 1e-5  # exact float32 products when no gradient is needed


def _inputs(seed: int, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    n, d, v = SHAPE["n_rows"], SHAPE["dim"], SHAPE["vocab"]
    inputs = {
        "hidden": torch.randn(n, d, generator=generator),
        "weight": torch.randn(v, d, generator=generator) * 3 / d**0.5,
        "bias": torch.randn(v, generator=generator) * 0.1,
        "targets": torch.randint(0, v, (n,), generator=generator),
        "ref_hidden": torch.randn(n, d + 16, generator=generator),
        "ref_weight": torch.randn(v, d + 16, generator=generator) * 3 / d**0.5,
    }
    inputs["targets"][::7] = -100
    return {k: t.to(device) for k, t in inputs.items()}


def _run(inputs: dict[str, torch.Tensor], dtype: torch.dtype, path: str, **options: Any):
    from evalharness.kernels.dispatch import token_stats
    from evalharness.kernels.reference import token_stats_reference

    leaves = {
        k: inputs[k].to(dtype).detach().requires_grad_() for k in ("hidden", "weight", "bias")
    }
    ref = {
        "ref_hidden": inputs["ref_hidden"].to(dtype),
        "ref_weight": inputs["ref_weight"].to(dtype),
    }
    args = (leaves["hidden"], leaves["weight"], inputs["targets"], leaves["bias"])
    if path == "reference":
        stats = token_stats_reference(*args, entropy=True, dtype=torch.float64, softcap=20.0, **ref)
    else:
        stats = token_stats(*args, entropy=True, impl="triton", softcap=20.0, **ref, **options)
    signs = torch.randn(len(inputs["targets"]), generator=torch.Generator().manual_seed(1))
    signs = signs.to(inputs["hidden"].device)
    (signs * (stats.logprobs + 0.3 * stats.entropy + 0.7 * stats.kl)).sum().backward()
    return stats, {k: leaf.grad for k, leaf in leaves.items()}


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.detach().double().abs().max().clamp_min(1e-12)
    return float((actual.detach().double() - expected.detach().double()).abs().max() / scale)


def run_checks(device: str = "cuda") -> dict[str, Any]:
    """Every check's measured error and verdict, as one JSON-able dict."""
    from evalharness.kernels.dispatch import token_stats

    inputs = _inputs(0, device)
    expected, expected_grads = _run(inputs, torch.float64, "reference")
    report: dict[str, Any] = {"failures": []}
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        for schedule in ("two-pass", "one-pass"):
            stats, grads = _run(inputs, dtype, "triton", schedule=schedule)
            again = _run(inputs, dtype, "triton", schedule=schedule)[1]
            key = f"{name}/{schedule}"
            errors = {
                o: _relative(getattr(stats, o), getattr(expected, o))
                for o in ("logprobs", "entropy", "kl")
            }
            errors |= {f"grad_{k}": _relative(g, expected_grads[k]) for k, g in grads.items()}
            report[key] = errors
            for what, error in errors.items():
                if not error < TOLERANCE[name]:
                    report["failures"].append(f"{key} {what}: {error:.2e}")
            for k, g in grads.items():
                if g.dtype != dtype:
                    report["failures"].append(f"{key} grad_{k} dtype {g.dtype}")
                if not torch.equal(g, again[k]):
                    report["failures"].append(f"{key} grad_{k} differs between two runs")
    # float32 scoring (no gradients): exact products
    with torch.no_grad():
        scored = token_stats(
            inputs["hidden"], inputs["weight"], inputs["targets"], inputs["bias"], impl="triton"
        )
    error = _relative(scored.logprobs, _plain_reference(inputs))
    report["float32_scoring_logprobs"] = error
    if not error < FLOAT32_SCORING_TOLERANCE:
        report["failures"].append(f"float32 scoring logprobs: {error:.2e}")
    # batch invariance: 9 rows alone and inside the full batch, bit for bit
    with torch.no_grad():
        hidden = inputs["hidden"].bfloat16()
        weight = inputs["weight"].bfloat16()
        alone = token_stats(hidden[600:609], weight, inputs["targets"][600:609], impl="triton")
        batched = token_stats(hidden, weight, inputs["targets"], impl="triton")
    if not torch.equal(alone.logprobs, batched.logprobs[600:609]):
        report["failures"].append("forward is not batch-invariant")
    return report


def _plain_reference(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    from evalharness.kernels.reference import token_stats_reference

    return token_stats_reference(
        inputs["hidden"], inputs["weight"], inputs["targets"], inputs["bias"], dtype=torch.float64
    ).logprobs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_kernel_matches_float64_on_the_gpu() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len(RESULT_PREFIX) :])
    assert report["failures"] == [], report


if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(run_checks()), flush=True)
