"""The PEFT family by name: `--peft dora --peft-arg r=8` → peft's own config class and preset.

A name is one of peft's tuner types (`lora`, `adalora`, `ia3`, ...) or a LoRA variant that peft
selects with a LoraConfig option (DoRA, rsLoRA, PiSSA, OLoRA, CorDA). Arguments are that config
class's dataclass fields, so peft's documentation is the reference for every one of them; the
only things added here are the run's defaults (target modules, task type, AdaLoRA's schedule
length) and the steps peft asks its caller to take (CorDA's calibration pass, AdaLoRA's rank
allocation after each optimizer step, PiSSA-style adapters saved against the original base).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalharness.errors import InputError

#: peft tuner types this trainer supports (each merges into the base weights).
TUNERS = ("lora", "adalora", "ia3", "vera", "loha", "lokr", "oft", "boft")
#: LoRA variants: a LoraConfig with one option preset (the user's args can still override it).
LORA_VARIANTS: dict[str, dict[str, Any]] = {
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},
    "pissa": {"init_lora_weights": "pissa"},
    "olora": {"init_lora_weights": "olora"},
    "corda": {"init_lora_weights": "corda"},
}
PEFT_TYPES = ("lora", *LORA_VARIANTS, *TUNERS[1:])
#: Every linear layer but the output head, as the LoRA trainer always did.
DEFAULT_TARGETS = "all-linear"
#: Types that keep peft's own per-architecture targets (Llama IA³: k_proj, v_proj, down_proj,
#: down_proj feed-forward): with "all-linear" peft saves an IA3 config it cannot load again
#: (its expanded target names no longer contain the short `feedforward_modules`).
PEFT_CHOOSES_TARGETS = ("ia3",)
#: LoRA initialisations that move the top singular directions out of the base weights: with
#: the adapter disabled the model is the residual, not the base (peft's own list of prefixes).
_BASE_MUTATING_INITS = ("pissa", "olora", "corda", "lora_ga")


def check_type(name: Any) -> str:
    """`name` if it is a supported adapter type, else a one-line error listing them."""
    if not isinstance(name, str) or name.lower() not in PEFT_TYPES:
        close = difflib.get_close_matches(str(name).lower(), PEFT_TYPES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(f"unknown peft type {name!r}{hint}; choose one of {', '.join(PEFT_TYPES)}")
    return name.lower()


def config_class(name: str) -> type:
    """peft's config class for a type name (LoraConfig for every LoRA variant)."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftType

    base = "lora" if name in LORA_VARIANTS else name
    return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[base.upper()]]


def argument_names(name: str) -> list[str]:
    """The settable fields of the type's peft config class: its dataclass fields less those
    every PeftConfig shares (type, task, bookkeeping), which the trainer sets."""
    from peft import PeftConfig

    shared = {f.name for f in dataclasses.fields(PeftConfig)}
    return [
        f.name for f in dataclasses.fields(config_class(name)) if f.init and f.name not in shared
    ]


def unknown_argument_error(name: str, argument: str) -> str:
    """The message for an argument the type's config class does not have."""
    known = argument_names(name)
    close = difflib.get_close_matches(argument, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"peft type {name} has no argument {argument!r}{hint}; "
        f"{config_class(name).__name__} fields: {', '.join(known)}"
    )


def build_config(
    name: str, args: dict[str, Any], *, task_type: str = "CAUSAL_LM", total_steps: int = 1
) -> Any:
    """peft's config object: the variant's preset, then the defaults, then the user's args.

    peft's own validation (`__post_init__`) runs here; its ValueError or TypeError becomes a
    one-line InputError. `total_steps` is AdaLoRA's schedule length unless `total_step` is given.
    """
    cls = config_class(name)
    values: dict[str, Any] = {"task_type": task_type}
    if name not in PEFT_CHOOSES_TARGETS:
        values["target_modules"] = DEFAULT_TARGETS
    if name == "adalora":
        values["total_step"] = total_steps
    values.update(LORA_VARIANTS.get(name, {}))
    values.update(args)
    unknown = sorted(set(args) - set(argument_names(name)))
    if unknown:
        raise InputError(unknown_argument_error(name, unknown[0]))
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        message = " ".join(str(exc).split())
        raise InputError(
            f"peft type {name}: {cls.__name__} rejected the arguments: {message}"
        ) from None


def mutates_base(name: str, args: dict[str, Any]) -> bool:
    """True when the adapter's initialisation rewrites the base weights (PiSSA, OLoRA, CorDA):
    the base with the adapter disabled is then not the starting model."""
    init = args.get("init_lora_weights", LORA_VARIANTS.get(name, {}).get("init_lora_weights"))
    return name in ("lora", *LORA_VARIANTS) and str(init).lower().startswith(_BASE_MUTATING_INITS)


def add_adapter(
    model: Any,
    name: str,
    args: dict[str, Any],
    *,
    task_type: str = "CAUSAL_LM",
    total_steps: int = 1,
    calibration: Callable[[Any], None] | None = None,
) -> Any:
    """Wrap `model` with the adapter; only the adapter trains.

    `calibration(model)` runs the model on a few training examples, one row per forward (peft's
    hooks squeeze the batch dimension): CorDA builds its covariance from them (peft's
    `preprocess_corda`) before the adapter is created.
    """
    from peft import get_peft_model

    config = build_config(name, args, task_type=task_type, total_steps=total_steps)
    if str(getattr(config, "init_lora_weights", "")).lower() == "corda":
        if calibration is None:
            raise InputError("peft type corda needs calibration data, which this method lacks")
        from peft.tuners.lora.corda import preprocess_corda
        from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

        # CorDA's hooks match module names before get_peft_model would expand "all-linear".
        config = _maybe_include_all_linear_layers(config, model)
        preprocess_corda(model, config, run_model=lambda: calibration(model))
    return get_peft_model(model, config)


def save_initial_adapter(model: Any, directory: Path) -> Path:
    """The adapter at initialisation, which peft needs to save a PiSSA/OLoRA/CorDA adapter as a
    plain LoRA on the original base (`path_initial_model_for_weight_conversion`)."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True  # peft: else loading it subtracts the decomposition again
    try:
        model.save_pretrained(directory, safe_serialization=True)
    finally:
        config.init_lora_weights = init
    return directory


def after_optimizer_step(model: Any, global_step: int) -> None:
    """AdaLoRA reallocates its ranks from the gradients after each optimizer step, before they
    are zeroed (peft's `update_and_allocate`); every other type has nothing to do."""
    tuner = getattr(model, "base_model", None)
    if hasattr(tuner, "update_and_allocate"):
        tuner.update_and_allocate(global_step)
