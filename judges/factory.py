"""Build a judge from a spec string.

- `self` or a model spec (`hf:…`, `openai:…`, alias): an LLM judge over that backend
  (`self` reuses the model under evaluation, already loaded);
- `rm:PATH_OR_HUB_ID`: a reward model;
- `clf:PATH_OR_HUB_ID`: a classifier model (refusal verdicts);
- `rules:NAME_OR_YAML` (`refusal-rules` = `rules:refusal`), `regex:PATTERN` (labels `match` /
  `no_match`), `refusal-regex:PATTERN` (a match is `full_refusal`, else `full_compliance`): a
  rule judge, refused by a task whose verdict labels it cannot give (`Judge.check_protocol`);
- `annotations:FILE`: verdicts imported from an AlpacaEval annotations file.
"""

from __future__ import annotations

from pathlib import Path

from evalharness.backends import Backend, load_backend
from evalharness.backends.spec import ALIASES as MODEL_ALIASES
from evalharness.backends.spec import BACKENDS, ModelSpec, parse_model_spec
from evalharness.errors import InputError, closest_name, did_you_mean

from .annotations import AnnotationsJudge
from .base import Judge
from .classifier import ClassifierJudge
from .llm import DEFAULT_MAX_NEW_TOKENS, DEFAULT_RETRIES, MODES, LLMJudge, auto_mode
from .reward import RewardModelJudge
from .rules import ALIASES, KINDS, RuleJudge

JUDGE_KINDS = (
    "use self, a model spec (hf:, openai:, ...), rm:, clf:, rules:, regex:, refusal-regex: "
    "or annotations:"
)


def _closest_judge(spec: str) -> str:
    """` (did you mean X?)` for a misspelt judge kind (`rule:refusal`) or name (`slef`)."""
    kind, colon, value = spec.partition(":")
    if colon:
        close = closest_name(kind, (*KINDS, "annotations", "rm", "clf", *BACKENDS))
        return f" (did you mean {close}:{value}?)" if close else ""
    return did_you_mean(spec, ("self", *ALIASES, *MODEL_ALIASES))


def build_judge(
    spec: str,
    *,
    model_spec: ModelSpec | None = None,
    model_backend: Backend | None = None,
    mode: str = "auto",
    base_url: str | None = None,
    api_key_env: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    concurrency: int | None = None,
    timeout_s: float | None = None,
    http_retries: int | None = None,
    retries: int = DEFAULT_RETRIES,
    device: str | None = None,
) -> Judge:
    """`device` places a judge that is a local model (`hf:`, `rm:`, `clf:`; default auto: the
    first accelerator); `self` runs where the evaluated model runs."""
    spec = ALIASES.get(spec, spec)
    kind, _, value = spec.partition(":")
    if kind in KINDS:
        return RuleJudge.from_spec(spec)
    if kind == "annotations":
        return AnnotationsJudge(Path(value))
    if kind == "rm":
        return RewardModelJudge(load_backend(parse_model_spec(spec, device=device)), name=spec)
    if kind == "clf":
        return ClassifierJudge(load_backend(parse_model_spec(spec, device=device)), name=spec)
    if model_spec is not None and spec in ("self", model_spec.raw):
        judge_spec, backend = model_spec, model_backend
    elif spec == "self":
        raise InputError("--judge self needs a model under evaluation; name a judge model")
    else:
        try:
            judge_spec = parse_model_spec(
                spec,
                base_url=base_url,
                api_key_env=api_key_env,
                concurrency=concurrency,
                timeout_s=timeout_s,
                max_retries=http_retries,
                device=device,
            )
        except InputError:
            if spec.partition(":")[0] in BACKENDS:
                raise  # a model spec whose options are wrong says so itself
            hint = _closest_judge(spec)
            raise InputError(f"unknown judge {spec!r}{hint}; {JUDGE_KINDS}") from None
        backend = load_backend(judge_spec)
    if judge_spec.backend == "outputs":
        raise InputError(f"--judge {spec!r}: recorded outputs cannot judge")
    if mode == "auto":
        mode = auto_mode(judge_spec.backend)
    if mode not in MODES:
        raise InputError(f"--judge-mode {mode!r} is not one of auto, {', '.join(MODES)}")
    assert backend is not None
    return LLMJudge(
        backend, mode=mode, name=judge_spec.raw, max_new_tokens=max_new_tokens, retries=retries
    )
