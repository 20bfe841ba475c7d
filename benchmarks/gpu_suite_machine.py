"""The jobs benchmarks/gpu_suite.py runs in child processes of its own (`--probe`,
`--build-model`): the versions and the card the steps will use, and the benchmark model.

A child process, because what they import (torch, transformers, CUDA) must come from the
environment the setup step has just prepared, not from the driver's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from measure import package_versions  # beside this script

REPO = Path(__file__).resolve().parent.parent
VERSION_PACKAGES = (
    "torch",
    "triton",
    "transformers",
    "accelerate",
    "peft",
    "tokenizers",
    "datasets",
    "evalharness",
    "lm_eval",
    "trl",
    "liger-kernel",
    "cut-cross-entropy",
    "vllm",
)

#: The benchmark model: Llama-3.2-1B's shape (what `models` builds on a GPU).
LLAMA_1B = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
}


def probe_versions(path: Path) -> None:
    """Versions of what the steps use, the card, and whether vLLM imports at all."""
    import torch

    found: dict[str, Any] = {"python": sys.version.split()[0]}
    found.update(package_versions(VERSION_PACKAGES, missing="not installed"))
    if found["vllm"] != "not installed":
        try:
            import vllm  # noqa: F401
        except Exception as exc:  # a broken vLLM is as good as none here
            found["vllm"] = f"installed, import fails: {type(exc).__name__}"
    cuda = torch.cuda.is_available()
    record = {
        "versions": found,
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": (
            round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None
        ),
    }
    path.write_text(json.dumps(record, indent=2))


def build_model(target: Path, smoke: bool) -> None:
    """The benchmark model in `target`: the tests' tiny chat model in smoke mode, else the
    Llama-3.2-1B-shaped random model (built on the GPU, saved in bf16)."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import build_tiny_chat_model, build_tokenizer

    target.mkdir(parents=True, exist_ok=True)
    if smoke:
        directory = build_tiny_chat_model(target / "tiny-chat")
        description = {
            "name": "tiny-chat",
            "what": "tests/tiny_models.py: 2-layer Llama, hidden 64, vocabulary 400, float32",
            "weights": "random, seeded",
            "dtype": "float32",
            "parameters": None,
        }
    else:
        import torch
        from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

        tokenizer = build_tokenizer()
        config = LlamaConfig(
            **LLAMA_1B,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            dtype="bfloat16",
        )
        torch.manual_seed(0)
        with torch.device("cuda"):  # initialised where it is fast: ~1 s instead of ~1 min
            model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        directory = target / "llama-3.2-1b-shape-random"
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        description = {
            "name": directory.name,
            "what": (
                "Llama-3.2-1B-shaped decoder built from a config: "
                + ", ".join(f"{k}={v}" for k, v in LLAMA_1B.items())
                + "; the tests' tokenizer (400 tokens, tests/tiny_models.py)"
            ),
            "weights": "random (transformers' init, seed 0), not trained",
            "dtype": "bfloat16",
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    description["dir"] = str(directory)
    (target / "model.json").write_text(json.dumps(description, indent=2))
