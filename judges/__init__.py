"""Judges: LLM (rating, pairwise), reward-model, rule and imported-annotation judges."""

from .base import Judge
from .factory import build_judge
from .llm import LLMJudge

__all__ = ["Judge", "LLMJudge", "build_judge"]
