"""`evalharness merge`: average fine-tuned checkpoints of one architecture into a new hf: checkpoint

uniform: the mean of all weights; greedy: the model-soup recipe, each checkpoint kept only if the
held-out log-likelihood of --heldout rows does not drop; linear: (1 - alpha) * first + alpha *
second (WiSE-FT).
"""

# The merging itself is `trainers.merging`; this module reads the flags.

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness merge`."""
    parser.add_argument("--method", required=True, choices=["uniform", "greedy", "linear"])
    parser.add_argument("--models", required=True, help="checkpoint directories, comma-separated")
    parser.add_argument("--out", required=True, help="new (empty) output directory")
    parser.add_argument("--alpha", type=float, default=0.5, help="linear: weight of the second")
    parser.add_argument(
        "--heldout", default=None, help="greedy: JSONL rows {context, continuation} to score"
    )


def cmd_merge(args: argparse.Namespace) -> int:
    from evalharness.trainers.merging import merge_command

    models = args.models.split(",")
    return merge_command(args.method, models, args.out, alpha=args.alpha, heldout=args.heldout)
