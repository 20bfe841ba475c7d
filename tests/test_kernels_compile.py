"""The kernels compile for a Hopper GPU (sm_90) on this machine, without a GPU, and their loops
are software-pipelined: tensor-core dots (wgmma) fed by asynchronous copies, with one shared
memory buffer per pipeline stage.

Triton's ptxas ships in its wheel, so only the launch is missing. The launch-time
specialisations Triton applies to real tensors are spelled out: unit strides along D become
constants and pointers/leading strides are 16-divisible. Without them (an unknown stride) bf16
loads cannot use cp.async and the loop silently loses its pipeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

UNIT_STRIDES = ("stride_hd", "stride_wd", "stride_rhd", "stride_rwd", "stride_dzv")
DIVISIBLE = ("stride_hn", "stride_wv", "stride_rhn", "stride_rwv", "stride_dzn", "dim", "ref_dim")
FLOAT32 = ("LSE", "ENTROPY", "REF_LSE", "G_LOGPROBS", "G_ENTROPY", "G_KL", "COL_SUMS", "PARTIALS")


def _compile(kernel: str, config_index: int) -> dict[str, int]:
    """Compile one config of `kernel` for sm_90 in bf16; shared bytes and IR op counts."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from evalharness.kernels import triton_backward, triton_forward

    if kernel == "forward_kernel":
        fn, config = triton_forward.forward_kernel, triton_forward.FORWARD_CONFIGS[config_index]
    else:
        fn = triton_backward.logit_grad_kernel
        config = triton_backward.LOGIT_GRAD_CONFIGS[config_index]
    constexprs: dict[str, object] = {
        "HAS_BIAS": False,
        "HAS_REF_BIAS": False,
        "HAS_SOFTCAP": False,
        "WITH_ENTROPY": False,
        "WITH_KL": False,
        "WITH_COL_SUMS": False,
        "IEEE": False,
        **config.kwargs,
    }
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list[list[object]]] = {}
    for index, name in enumerate(fn.arg_names):
        if name in UNIT_STRIDES:
            constexprs[name] = 1
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if name == "T":
            signature[name] = "*i64"
        elif name == "BEST_INDEX":
            signature[name] = "*i32"
        elif name in FLOAT32:
            signature[name] = "*fp32"
        elif name == "softcap":
            signature[name] = "fp32"
        elif name[0].isupper():
            signature[name] = "*bf16"
        else:
            signature[name] = "i32"
        if signature[name].startswith("*") or name in DIVISIBLE:
            attrs[(index,)] = [["tt.divisibility", 16]]
    constexprs = {k: v for k, v in constexprs.items() if k in fn.arg_names}
    compiled = triton.compile(
        ASTSource(fn, signature, constexprs, attrs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    ir = compiled.asm["ttgir"]
    tile = (config.kwargs["BLOCK_N"] + config.kwargs["BLOCK_V"]) * config.kwargs["BLOCK_D"] * 2
    return {
        "shared": compiled.metadata.shared,
        "stage_bytes": tile,
        "stages": config.num_stages,
        "wgmma": ir.count("warp_group_dot "),
        "async_copies": ir.count("async_copy_global_to_local"),
    }


@pytest.mark.parametrize(
    ("kernel", "config_index"), [("forward_kernel", 0), ("logit_grad_kernel", 0)]
)
def test_kernel_compiles_for_hopper_with_a_pipelined_loop(kernel: str, config_index: int) -> None:
    # The kernel module decides compile vs interpret at import, and the other kernel tests set
    # TRITON_INTERPRET=1 in this process: compile in a fresh one.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from test_kernels_compile import _compile; "
        f"print(json.dumps(_compile({kernel!r}, {config_index})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0 and "ptxas" in done.stderr and "not found" in done.stderr:
        pytest.skip("Triton's ptxas is not available")
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["wgmma"] >= 1, facts  # Hopper tensor-core dots
    assert facts["async_copies"] >= 2, facts  # both operands fetched ahead
    assert facts["shared"] >= facts["stages"] * facts["stage_bytes"], facts  # one buffer a stage
