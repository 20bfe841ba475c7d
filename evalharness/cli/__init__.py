"""The `evalharness` command line: one module per command; each parses its arguments and calls the
engine. `parser` assembles them, `main` runs one, `options` holds the flags several share."""

from evalharness.cli.main import main
from evalharness.cli.parser import build_parser

__all__ = ["build_parser", "main"]
