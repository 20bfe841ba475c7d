"""DriftCaps-style safety refusal and drift between a base model and its fine-tune."""

from .task import DriftCaps

__all__ = ["DriftCaps"]
