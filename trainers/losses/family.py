"""A family of losses that share their inputs: declared once, each loss only what is its own.

The registry reads a loss's keyword-only signature to learn which tensors to compute and which
hyperparameters a user may set. Losses of one family take the same inputs and compute the same
first quantities from them (the DPO family's per-response scores, the ranking family's
length-normalised scores); `member` writes that signature and that first step once per family.
A member is then a short function of the prepared quantities (positional) and of the extra
inputs and options it names (keyword-only): its registered form is keyword-only throughout, so
the loop, `evalharness methods` and a direct call see an ordinary loss.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .registry import INPUTS

Tensor = torch.Tensor

#: A family's first step: from the bound arguments (every input and option, by name) to the
#: quantities its members take positionally.
Prepare = Callable[[Mapping[str, Any]], Sequence[Any]]

#: The default of an input a family's members cannot do without.
REQUIRED = inspect.Parameter.empty


def member(
    score: Callable[..., Tensor],
    *,
    inputs: Mapping[str, Any],
    prepare: Prepare,
    options: Mapping[str, Any] | None = None,
) -> Callable[..., Tensor]:
    """`score` as a keyword-only loss over the family's `inputs` (name -> default, or
    `REQUIRED`) and shared `options` (name -> default).

    The signature lists the family's inputs, the other inputs `score` names, `score`'s own
    options, then the family's options. A call binds the arguments (a missing or unknown one is
    a TypeError naming the loss, as for any function), and returns
    `score(*prepare(arguments), **own)` where `own` are the keyword arguments `score` declares
    (family inputs included when it names them).
    """
    own = [
        parameter
        for parameter in inspect.signature(score).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]

    def keyword(name: str, default: Any, annotation: str) -> inspect.Parameter:
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )

    shared = [keyword(n, d, "Tensor") for n, d in inputs.items()]
    extra = [p for p in own if p.name in INPUTS and p.name not in inputs]
    own_options = [p for p in own if p.name not in INPUTS]
    family_options = [keyword(n, d, type(d).__name__) for n, d in (options or {}).items()]
    signature = inspect.Signature(
        [*shared, *extra, *own_options, *family_options], return_annotation="Tensor"
    )
    passed = [p.name for p in own]

    @functools.wraps(score)
    def loss(**given: Any) -> Tensor:
        try:
            bound = signature.bind(**given)
        except TypeError as error:
            raise TypeError(f"{score.__name__}() {error}") from None
        bound.apply_defaults()
        arguments = bound.arguments
        return score(*prepare(arguments), **{name: arguments[name] for name in passed})

    loss.__signature__ = signature  # type: ignore[attr-defined]
    return loss
