"""AlpacaEval-style pairwise win rate against a reference, with length control."""

from .task import AlpacaEval

__all__ = ["AlpacaEval"]
