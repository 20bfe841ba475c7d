"""`evalharness parity --a SPEC --b SPEC`: compare two backends of one model: greedy answers and
continuation log-probs

Runs 12 authored prompts through both backends (greedy generation, then the log-prob of a fixed
continuation after each prompt) and reports the share of identical greedy answers and the largest
log-prob difference. Exit 1 when an answer differs or a difference exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import json

from evalharness.backends.devices import DEVICE_HELP
from evalharness.backends.spec import parse_model_spec
from evalharness.engine.parity import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOLERANCE
from evalharness.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness parity`."""
    parser.add_argument("--a", required=True, help="first backend, e.g. hf:PATH")
    parser.add_argument("--b", required=True, help="second backend, e.g. vllm:PATH")
    parser.add_argument("--limit", type=int, default=None, help="first N prompts only")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest |log p_A - log p_B| per continuation, in nats ({DEFAULT_TOLERANCE})",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="greedy answer length"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        help="both backends: auto (default: the checkpoint's dtype on a GPU, float32 on the "
        "CPU), float32, bfloat16, float16",
    )
    parser.add_argument(
        "--device", default=None, help=f"both backends: where they run ({DEVICE_HELP})"
    )
    parser.add_argument("--max-model-len", type=int, default=None, help="vllm: context cap")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_parity(args: argparse.Namespace) -> int:
    from evalharness.backends import load_backend
    from evalharness.engine.parity import run_parity

    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    options = {"dtype": args.dtype, "max_model_len": args.max_model_len, "device": args.device}
    specs = [parse_model_spec(text, **options) for text in (args.a, args.b)]
    for spec in specs:
        if spec.backend not in ("hf", "builtin", "vllm"):
            raise InputError(f"parity compares local models (hf:, vllm:), not {spec.raw!r}")
    report = run_parity(
        load_backend(specs[0]),
        load_backend(specs[1]),
        limit=args.limit,
        tolerance=args.tolerance,
        max_new_tokens=args.max_new_tokens,
    )
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(
            f"{report.a} vs {report.b}: {report.n} prompts; greedy answers identical "
            f"{report.greedy_identical:.0%}; log-prob |diff| max {report.max_abs_logprob_diff:.2g}"
            f", mean {report.mean_abs_logprob_diff:.2g} nats (tolerance {report.tolerance:g})"
        )
        for row in report.greedy_mismatches:
            print(f"  answer differs [{row['id']}]: A {row['a']!r} | B {row['b']!r}"[:300])
        for row in report.logprob_mismatches:
            print(
                f"  log-prob differs [{row['id']}]: A {row['a']:.4f} ({row['n_tokens_a']} tokens)"
                f" | B {row['b']:.4f} ({row['n_tokens_b']} tokens)"
            )
        print("parity: PASS" if report.passed else "parity: FAIL")
    return 0 if report.passed else 1
