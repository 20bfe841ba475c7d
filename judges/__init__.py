"""Judges: protocols, prompt templates, and rating judges over any backend."""

from .base import Judge
from .factory import build_judge
from .rating import RatingJudge

__all__ = ["Judge", "RatingJudge", "build_judge"]
