"""`evalharness merge`: average fine-tuned checkpoints into a new one (`trainers.merging`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    """Add the `merge` subcommand to an argparse subparsers object."""
    merge = commands.add_parser(
        "merge",
        help="average fine-tuned checkpoints of one architecture into a new hf: checkpoint",
        description="uniform: the mean of all weights; greedy: the model-soup recipe, each "
        "checkpoint kept only if the held-out log-likelihood of --heldout rows does not drop; "
        "linear: (1 - alpha) * first + alpha * second (WiSE-FT).",
    )
    merge.add_argument("--method", required=True, choices=["uniform", "greedy", "linear"])
    merge.add_argument("--models", required=True, help="checkpoint directories, comma-separated")
    merge.add_argument("--out", required=True, help="new (empty) output directory")
    merge.add_argument("--alpha", type=float, default=0.5, help="linear: weight of the second")
    merge.add_argument(
        "--heldout", default=None, help="greedy: JSONL rows {context, continuation} to score"
    )


def cmd_merge(args: argparse.Namespace) -> int:
    from evalharness.trainers.merging import merge_command

    models = args.models.split(",")
    return merge_command(args.method, models, args.out, alpha=args.alpha, heldout=args.heldout)
