"""TrueMatch: describe an item within a word budget so a frozen retriever finds it in its bag."""

from .task import TrueMatch

__all__ = ["TrueMatch"]
