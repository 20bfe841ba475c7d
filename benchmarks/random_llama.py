"""A Llama-shaped model with random weights and the tests' tiny tokenizer, sized from the command
line: what the in-process benchmarks (evaluate_in_memory.py, serve_batching.py) run, so that
their speed is that of a real decoder of that size without downloading one.

The caller puts the repository and tests/ on sys.path (tests/tiny_models.py holds the tokenizer).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_size_args(parser: argparse.ArgumentParser) -> None:
    """`--layers` and `--hidden`: the decoder's depth and width (heads follow the width)."""
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)


def random_llama(layers: int, hidden: int, **config: Any) -> tuple[Any, Any]:
    """(model, tokenizer): `layers` x `hidden` Llama, seed 0, float32, in eval mode on the CPU;
    `config` adds or overrides LlamaConfig fields."""
    import torch
    from tiny_models import build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    fields: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "num_key_value_heads": max(1, hidden // 256),
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**fields, **config)).to(torch.float32).eval()
    return model, tokenizer
