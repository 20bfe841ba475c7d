"""LongICLBench: long in-context learning with extreme label spaces, scored per round."""

from .task import LongICLBench

__all__ = ["LongICLBench"]
