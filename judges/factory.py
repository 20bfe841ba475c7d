"""Build a judge from a spec string: `self`, `hf:…`, `openai:…` or a model alias."""

from __future__ import annotations

from evalharness.backends import Backend, load_backend
from evalharness.errors import InputError
from evalharness.modelspec import ModelSpec, parse_model_spec

from .base import Judge
from .rating import MODES, RatingJudge


def build_judge(
    spec: str,
    *,
    model_spec: ModelSpec,
    model_backend: Backend,
    mode: str = "auto",
    base_url: str | None = None,
    max_new_tokens: int = 512,
) -> Judge:
    """A rating judge over a backend; `self` (or the model's own spec) reuses the loaded model."""
    if spec in ("self", model_spec.raw):
        judge_spec, backend = model_spec, model_backend
    else:
        judge_spec = parse_model_spec(spec, base_url=base_url)
        backend = load_backend(judge_spec)
    if mode == "auto":
        mode = "text" if judge_spec.backend == "openai" else "probs"
    if mode not in MODES:
        raise InputError(f"--judge-mode {mode!r} is not one of auto, {', '.join(MODES)}")
    return RatingJudge(backend, mode=mode, name=judge_spec.raw, max_new_tokens=max_new_tokens)
