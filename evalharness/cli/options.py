"""Option groups that several commands share, and the model spec they describe.

`run`, `score` and `serve` all name a model the same way (`--model`, `--dtype`, `--device`,
vLLM's engine options...), and `run` and `import` judge the same way (`--judge` and its
endpoint, budget and retries). Declaring each group once keeps the flags, defaults and help
texts identical across commands, so a flag learnt on one command means the same on another.
"""

from __future__ import annotations

import argparse
from typing import Any

from evalharness.backends.devices import DEVICE_HELP, DEVICE_MAPS
from evalharness.backends.spec import (
    DEFAULT_MODEL_ALIAS,
    ModelSpec,
    batch_size_option,
    parse_model_spec,
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The flags of a model spec: which model, its dtype and placement, and backend options."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL_ALIAS, help="hf:PATH_OR_ID, openai:NAME or alias"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        help="auto (default: the checkpoint's dtype, e.g. bfloat16, on an accelerator; float32 "
        "on the CPU), float32, bfloat16, float16",
    )
    add_device_options(parser)
    parser.add_argument(
        "--batch-size",
        default=None,
        help="requests per batch (hf), or auto: scoring batches as large as memory allows",
    )
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for openai:")
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="env var holding the API key (openai: sends it; serve requires it from clients); "
        "without it $OPENAI_API_KEY is sent to api.openai.com only",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="parallel API requests")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="allow model code from the hub",
    )
    vllm = parser.add_argument_group("vllm: engine options")
    vllm.add_argument("--tensor-parallel-size", type=int, default=None, help="GPUs per model")
    vllm.add_argument("--max-model-len", type=int, default=None, help="context length cap")
    vllm.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="memory share for weights and KV cache (0.9 of a GPU; 0.3 of RAM on CPU)",
    )
    vllm.add_argument(
        "--enforce-eager",
        action="store_true",
        default=None,
        help="no CUDA graphs / torch.compile (the default on CPU)",
    )
    vllm.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        default=None,
        help="disable automatic prefix caching",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="backend replicas as Ray actors, requests split across them (hf:, vllm:)",
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """`--device` and `--device-map`: where a model named by a spec runs
    (`evalharness.backends.devices`)."""
    parser.add_argument(
        "--device", default=None, help=f"where the model runs: {DEVICE_HELP}; default auto"
    )
    parser.add_argument(
        "--device-map",
        default=None,
        help="spread the model over every visible GPU with accelerate's placement when it is "
        f"too large for one: {', '.join(DEVICE_MAPS)}; not with an explicit --device",
    )


def add_judge_options(parser: argparse.ArgumentParser) -> None:
    """The flags of the judge a run uses: which one, how it is asked, and its call budget."""
    parser.add_argument(
        "--judge",
        default=None,
        help="judge: 'self', a model spec (hf:, openai:), rm:REWARD_MODEL, clf:CLASSIFIER, "
        "rules:NAME_OR_YAML, regex:PATTERN, refusal-regex:PATTERN, annotations:FILE "
        "(default: each task's own default, else 'self')",
    )
    parser.add_argument(
        "--judge-mode", default="auto", help="auto, probs (token probabilities) or text"
    )
    parser.add_argument("--judge-base-url", default=None, help="endpoint for an openai: judge")
    parser.add_argument(
        "--judge-api-key-env",
        default=None,
        metavar="NAME",
        help="env var holding an openai: judge's API key (without it $OPENAI_API_KEY is sent "
        "to api.openai.com only)",
    )
    parser.add_argument(
        "--judge-max-tokens", type=int, default=512, help="judge output budget in text mode"
    )
    parser.add_argument(
        "--judge-concurrency", type=int, default=None, help="parallel judge API requests"
    )
    parser.add_argument(
        "--judge-timeout", type=float, default=None, help="seconds per judge API request"
    )
    parser.add_argument(
        "--judge-http-retries",
        type=int,
        default=None,
        help="retries (with backoff) per judge API request on 429, 5xx and timeouts",
    )
    parser.add_argument(
        "--judge-retries",
        type=int,
        default=2,
        help="times a verdict that does not parse is asked again (text mode)",
    )
    parser.add_argument(
        "--max-judge-calls",
        type=int,
        default=None,
        help="judge call budget for this invocation; the rest stays unjudged until a re-run",
    )
    parser.add_argument(
        "--judge-device",
        default=None,
        help=f"where a judge that is a local model (hf:, rm:, clf:) runs: {DEVICE_HELP} "
        "(default: --device)",
    )


def judge_settings(args: argparse.Namespace) -> dict[str, Any]:
    """`evaluate`'s judge keyword arguments from the `add_judge_options` flags (the judge spec
    itself and its device are the caller's: `import` and `run` choose them differently)."""
    return {
        "judge_mode": args.judge_mode,
        "judge_base_url": args.judge_base_url,
        "judge_api_key_env": args.judge_api_key_env,
        "judge_max_new_tokens": args.judge_max_tokens,
        "judge_concurrency": args.judge_concurrency,
        "judge_timeout_s": args.judge_timeout,
        "judge_http_retries": args.judge_http_retries,
        "judge_retries": args.judge_retries,
        "max_judge_calls": args.max_judge_calls,
    }


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Where a run is stored and how its result is printed."""
    parser.add_argument("--store", default=None, help="run store (SQLite) path")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model spec the `add_model_options` flags describe."""
    return parse_model_spec(
        args.model,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        batch_size=None if args.batch_size is None else batch_size_option(args.batch_size),
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
        trust_remote_code=args.trust_remote_code,
        tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        prefix_caching=args.prefix_caching,
        enforce_eager=args.enforce_eager,
        workers=args.workers,
    )
