"""`evalharness score`: log-likelihoods of JSONL rows' continuations (`engine.loglikelihood`)."""

from __future__ import annotations

import argparse
from typing import Any

from evalharness.cli.options import add_model_options, model_spec


def add_parser(commands: Any) -> None:
    """Add the `score` subcommand to an argparse subparsers object."""
    score = commands.add_parser(
        "score",
        help="log-likelihood of continuations, as lm-evaluation-harness computes it",
        description="Reads JSONL rows with context, continuation and an optional id; prints "
        "one JSON line per row, in input order, with the id, logprob (summed over the "
        "continuation's tokens), n_tokens and is_greedy: lm-eval's loglikelihood numbers.",
    )
    add_model_options(score)
    score.add_argument("--input", required=True, help="JSONL file of rows, or - for stdin")


def cmd_score(args: argparse.Namespace) -> int:
    from evalharness.engine.loglikelihood import score_file

    return score_file(model_spec(args), args.input)
