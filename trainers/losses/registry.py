"""The method registry: a name, its data format and one loss function each.

A loss is a plain function of keyword-only tensors (per-sequence or per-token log-probabilities,
lengths, rewards) and hyperparameters, returning a `[batch]` tensor of per-example losses whose
mean is the batch loss. The training loop reads the function's signature to know which
quantities to compute and which hyperparameters a user may set, so a new method is one function
and one `@register` line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from evalharness.errors import InputError, did_you_mean

from .options import INPUT_OPTIONS, convert_value

DataFormat = Literal["sft", "pairwise", "binary", "ranking", "prompt"]

#: What each data format's rows hold (shown by `evalharness methods`).
DATA_FORMATS: dict[str, str] = {
    "sft": "prompt + completion, or messages (conversational)",
    "pairwise": "prompt + chosen + rejected (or chosen/rejected dialogues with a shared prompt)",
    "binary": "prompt + completion + label (true = desirable)",
    "ranking": "prompt + completions [K] + rewards [K]",
    "prompt": "prompt only (completions generated online, scored by a judge or reward model)",
}

#: Every tensor a loss may ask for, by keyword. Shapes: B = examples (prompts for `prompt`
#: methods' groups flattened to B = prompts x G), T = completion tokens, K = candidates.
INPUTS: dict[str, str] = {
    # pairwise: per-sequence sums of completion-token log-probs, [B]
    "policy_chosen_logps": "[B] sum of log p(chosen tokens) under the policy",
    "policy_rejected_logps": "[B] sum of log p(rejected tokens) under the policy",
    "ref_chosen_logps": "[B] the same under the frozen reference",
    "ref_rejected_logps": "[B] the same under the frozen reference",
    "chosen_lengths": "[B] number of chosen completion tokens (float)",
    "rejected_lengths": "[B] number of rejected completion tokens (float)",
    "policy_chosen_full_logps": "[B] sum of log p over every chosen token after the first, "
    "prompt included (ORPO's NLL, as TRL's)",
    "policy_chosen_nll_logps": "[B] policy_chosen_logps before LD-DPO's ld_alpha weighting, for "
    "NLL terms (given only when ld_alpha is set)",
    "chosen_full_lengths": "[B] number of those tokens (float)",
    # sft / binary: one completion per example, [B]
    "policy_logps": "[B] (ranking: [B, K]) sum of completion log-probs under the policy",
    "ref_logps": "[B] the same under the reference (PoFT: under the aligned model)",
    "lengths": "[B] (ranking: [B, K]) completion token counts (float)",
    "labels": "[B] bool, true = desirable (binary feedback)",
    "policy_kl_logps": "[B] policy log-probs of mismatched prompt/completion pairs (KTO)",
    "ref_kl_logps": "[B] reference log-probs of the same mismatched pairs (KTO)",
    "delta": "[] running mean of rewards kept by the loop across steps (BCO)",
    # ranking
    "rewards": "[B, K] candidate rewards (ranking); [B] sample rewards (online)",
    # token level, [B, T]
    "token_logps": "[B, T] log p(token) under the policy, 0 where masked",
    "token_mask": "[B, T] bool, true on completion tokens",
    "token_kl": "[B, T] KL(p_ref || p_policy) over the full vocabulary at each token",
    "old_token_logps": "[B, T] log-probs under the policy that sampled (online methods)",
    "ref_token_logps": "[B, T] log-probs under the reference (online KL term)",
    "group_size": "int, samples per prompt G (online methods; rows grouped consecutively)",
    "values": "[B, T] value-head predictions V(s_t) at each token's position (PPO)",
    "old_values": "[B, T] the same when the rollout was sampled (PPO's value clip)",
    "preferences": "[P] probability that each prompt's first sample is preferred to its "
    "second (online pair methods: a judge's or reward model's verdict)",
    # full next-token distributions, [B, T, V] (distillation)
    "student_logits": "[B, T, V] the policy's logits over the full vocabulary",
    "teacher_logits": "[B, T, V] the teacher's logits at the same positions",
    # reward model
    "chosen_rewards": "[B] scalar head output on chosen",
    "rejected_rewards": "[B] scalar head output on rejected",
    "margins": "[B] optional preference margins m (reward model), 0 when absent",
}


@dataclass(frozen=True)
class Method:
    name: str
    loss: Callable[..., torch.Tensor]
    data_format: DataFormat
    needs_reference: bool
    summary: str
    #: Settings an online loop applies while sampling and judging, by default (Nash-MD's
    #: `mixture_coef`, `missing_eos_penalty`): options a user sets like the loss's own.
    loop_options: Mapping[str, object] = field(default_factory=dict)
    #: The method's own conversion of a hyperparameter, in place of the one shared by name
    #: (`options.OPTIONS`): online DPO's `loss_type` is one of two names, `mixture`'s a list.
    conversions: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        """The tensors the loss takes (keyword names found in `INPUTS`)."""
        return [p for p in inspect.signature(self.loss).parameters if p in INPUTS]

    @property
    def required_inputs(self) -> list[str]:
        """Inputs the loss cannot do without (no default); the loop must supply them."""
        parameters = inspect.signature(self.loss).parameters
        return [p for p in self.inputs if parameters[p].default is inspect.Parameter.empty]

    @property
    def hyperparameters(self) -> dict[str, object]:
        """Every other keyword with its default: what a user may set (`--loss-arg beta=0.2`)."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.loss).parameters.items()
            if name not in INPUTS
        }

    @property
    def input_options(self) -> dict[str, object]:
        """Settings the loop applies while computing the inputs (`INPUT_OPTIONS`), by default.

        LD-DPO's `ld_alpha` reweights the per-sequence sums of the policy and the reference
        before any loss sees them (as TRL does before its loss loop), so it belongs to every
        pairwise method with a reference rather than to one loss. An online method's own
        `loop_options` (how it samples and judges) are its input options in the same sense.
        """
        if self.data_format == "pairwise" and self.needs_reference:
            return dict(INPUT_OPTIONS)
        return dict(self.loop_options)


_METHODS: dict[str, Method] = {}


def register(
    name: str,
    *,
    data: DataFormat,
    reference: bool,
    summary: str,
    loop_options: Mapping[str, object] | None = None,
    conversions: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator adding a loss function to the registry under `name`; `loop_options` (name ->
    default) are the settings its loop applies outside the loss (`Method.loop_options`),
    `conversions` its own checks of a hyperparameter (`Method.conversions`)."""

    def add(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        unknown_positional = [
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.kind is not inspect.Parameter.KEYWORD_ONLY
        ]
        if unknown_positional:
            raise ValueError(
                f"loss {name!r}: parameters must be keyword-only: {unknown_positional}"
            )
        _METHODS[name] = Method(
            name,
            function,
            data,
            reference,
            summary,
            dict(loop_options or {}),
            dict(conversions or {}),
        )
        return function

    return add


def lookup(name: str) -> Method:
    """The method registered as `name` among those imported so far (the package's `method`
    imports every family first)."""
    if name not in _METHODS:
        raise InputError(
            f"unknown method {name!r}{did_you_mean(name, _METHODS)}; `evalharness methods` "
            "lists them"
        )
    return _METHODS[name]


def registered() -> list[Method]:
    """Every method imported so far, by name."""
    return sorted(_METHODS.values(), key=lambda m: m.name)


def hyperparameters(method: Method, given: dict[str, Any]) -> dict[str, Any]:
    """The loss's keyword hyperparameters and the method's input options (`ld_alpha`): defaults
    overridden by `given`, types checked, documented options converted (by the method's own
    `conversions`, else `options.OPTIONS`).

    The one place a user's values are checked, for the loop, the online loop and the command
    line alike, so every method reports a bad value the same way.
    """
    known = {**method.hyperparameters, **method.input_options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        choices = ", ".join(sorted(known)) or "none"
        raise InputError(
            f"method {method.name} has no hyperparameter {', '.join(unknown)} (it has: {choices})"
        )
    values = dict(known)
    for name, value in given.items():
        own = method.conversions.get(name)
        try:
            values[name] = own(value) if own else convert_value(name, value, known[name])
        except (TypeError, ValueError):
            raise InputError(f"{method.name}: {name}={value!r} is not a number") from None
        except InputError as error:
            raise InputError(f"{method.name}: {error}") from None
    missing = [n for n, v in values.items() if v is inspect.Parameter.empty]
    if missing:
        raise InputError(f"method {method.name} needs {', '.join(missing)}")
    return values
