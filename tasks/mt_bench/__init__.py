"""MT-Bench: two-turn questions in eight categories, rated 1-10 by a judge."""

from .task import MTBench

__all__ = ["MTBench"]
