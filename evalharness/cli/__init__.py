"""The `evalharness` command line: one module per command; each parses its arguments and calls the
engine."""

from evalharness.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
