"""`evalharness score`: log-likelihood of continuations, as lm-evaluation-harness computes it

Reads JSONL rows with context, continuation and an optional id; prints one JSON line per row, in
input order, with the id, logprob (summed over the continuation's tokens), n_tokens and is_greedy:
lm-eval's loglikelihood numbers.
"""

# The rows are scored by `engine.loglikelihood`; this module reads the flags.

from __future__ import annotations

import argparse

from evalharness.cli.options import add_model_options, model_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness score`."""
    add_model_options(parser)
    parser.add_argument("--input", required=True, help="JSONL file of rows, or - for stdin")


def cmd_score(args: argparse.Namespace) -> int:
    from evalharness.engine.loglikelihood import score_file

    return score_file(model_spec(args), args.input)
