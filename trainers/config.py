"""Everything one training run needs, as one dataclass read from flags or a YAML mapping.

A mapping is checked against the field types when it is read, before anything is imported or
loaded: PyYAML reads `5e-6` (no dot) as a string, which is converted because a number is what
the user meant, while `learning_rate: fast` or `epochs: [1]` are one-line errors naming the file,
the line and the field.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from evalharness.backends.devices import DEVICE_HELP, parse_device
from evalharness.errors import InputError, did_you_mean

from .rewards.spec import check_reward

#: Where a setting was written: `locate("learning_rate")` -> "train.yaml:5" (or just a file).
Locate = Callable[..., str]

#: `auto`: the checkpoint's dtype on an accelerator, float32 on the CPU
#: (`evalharness.backends.devices`).
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: autocast as accelerate takes it; `auto`: bf16 on a CUDA GPU (TRL's default), else no.
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
#: Who samples an online run's completions (`trainers.samplers`); `auto`: vLLM on a CUDA GPU
#: when it is installed, else `generate`.
ROLLOUTS = ("auto", "hf", "vllm")


@dataclass
class LoraSettings:
    """LoRA through `peft`; the reference model is the base with the adapters disabled."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    load_in_4bit: bool = False  # QLoRA: needs bitsandbytes and a GPU

    def as_peft(self) -> PeftSettings:
        """The same adapter in the general form (`lora:` is `peft: {type: lora}`)."""
        args = {
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
        }
        return PeftSettings("lora", args, self.load_in_4bit)


@dataclass
class PeftSettings:
    """Any adapter of the PEFT family (`trainers.adapters.PEFT_TYPES`) with its peft config
    arguments; the reference is the base with the adapter disabled (a separate copy of the
    base for PiSSA-style initialisations, which rewrite the base weights)."""

    type: str = "lora"
    args: dict[str, Any] = field(default_factory=dict)
    load_in_4bit: bool = False  # a 4-bit base (QLoRA and the like): bitsandbytes and a GPU


@dataclass
class TrainConfig:
    method: str
    model: str
    data: str
    out: str
    # Loss hyperparameters: numbers, strings, booleans, or lists of them (`loss_type`).
    loss_args: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None  # default: the starting model (or LoRA base); PoFT: aligned
    eval_data: str | None = None
    eval_fraction: float = 0.0  # held out from `data` when no eval_data is given
    learning_rate: float = 5e-6
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    max_prompt_length: int | None = None
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: LoraSettings | None = None
    peft: PeftSettings | None = None  # the general form; `lora` is `peft: {type: lora}`
    dtype: str = "auto"  # weights; see trainers.precision for what auto means where
    device: str = "auto"  # auto (first accelerator, else cpu), cpu, cuda, cuda:N, mps
    mixed_precision: str = "auto"  # autocast: auto, no, bf16, fp16
    tf32: bool = True  # float32 matrix products in TF32 on CUDA (false: IEEE float32)
    seed: int = 0
    limit: int | None = None  # first N training rows (smoke runs)
    pack: bool = False  # sft/dft: pack examples into max_length rows (see data.pack_examples)
    eval_every: int = 0  # steps between held-out evaluations; 0 = only at the end
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    # Online methods (grpo, rloo): samples per prompt, generation length, reward source.
    group_size: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    # rm:PATH, python:MODULE:FUNCTION, ... or [{reward: SPEC, weight: W}, ...] (trainers.rewards)
    reward: str | list[dict[str, Any]] | None = None
    rollouts: str = "auto"  # auto, hf, vllm: who samples (trainers.samplers)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def adapter(self) -> PeftSettings | None:
        """The adapter to train, from `peft` or `lora` (None: full fine-tuning)."""
        if self.peft is not None:
            return self.peft
        return self.lora.as_peft() if self.lora is not None else None

    @classmethod
    def from_mapping(
        cls,
        mapping: dict[str, Any],
        where: str,
        *,
        locate: Locate | None = None,
        section: str = "",
    ) -> TrainConfig:
        """Build from a YAML mapping; unknown, missing or mistyped keys are one-line errors.

        `where` names the source (a file, "command line"); `locate` gives a field's `file:line`
        when known, and `section` prefixes field names (`train.` in a pipeline file).
        """
        locate = locate or (lambda *keys: where)
        _reject_unknown(mapping, cls, locate, "training", section)
        missing = [name for name in ("method", "model", "data", "out") if name not in mapping]
        if missing:
            names = ", ".join(section + m for m in missing)
            raise InputError(f"{where}: missing training setting(s) {names}")
        hints = get_type_hints(cls)
        values = {}
        for name, value in mapping.items():
            label = f"{locate(name)}: field '{section}{name}'"
            if name == "lora":
                values[name] = _lora(value, label, lambda key: locate("lora", key), section)
            elif name == "peft":
                values[name] = _peft(value, label, lambda key: locate("peft", key), section)
            elif name == "loss_args":
                values[name] = _scalar_mapping(value, label)
            elif name == "extra":
                values[name] = _mapping(value, label)
            elif name == "reward":
                values[name] = None if value is None else check_reward(value, label)
            else:
                values[name] = convert(value, hints[name], label)
        for name, choices in (
            ("dtype", DTYPES),
            ("mixed_precision", MIXED_PRECISIONS),
            ("rollouts", ROLLOUTS),
        ):
            if values.get(name, "auto") not in choices:
                raise InputError(
                    f"{locate(name)}: field '{section}{name}' must be one of "
                    f"{', '.join(choices)}, not {values[name]!r}"
                )
        if "device" in values:
            try:
                values["device"] = parse_device(values["device"], option="device")
            except InputError:
                raise InputError(
                    f"{locate('device')}: field '{section}device' must be {DEVICE_HELP}, "
                    f"not {values['device']!r}"
                ) from None
        if values.get("lora") is not None and values.get("peft") is not None:
            raise InputError(
                f"{locate('peft')}: field '{section}peft': give either lora or peft, not both "
                f"(lora is peft type lora)"
            )
        return cls(**values)


class _NotConvertible(Exception):
    """A value that is not of the kind a field wants (caught and reported with the field)."""


def convert(value: Any, hint: Any, label: str) -> Any:
    """`value` as the field type `hint` (str, int, float, bool, optionally `| None`).

    Numbers written as strings ("5e-6", "1e3") are converted; anything else that does not fit
    is an InputError: `LABEL must be a number, not 'fast'`.
    """
    members = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    if value is None and type(None) in members:
        return None
    for member in members:
        converter = _CONVERTERS.get(member)
        if converter is None:
            continue
        try:
            return converter(value)
        except _NotConvertible:
            continue
    expected = " or ".join(_EXPECTED[m] for m in members if m in _EXPECTED)
    raise InputError(f"{label} must be {expected}, not {_shown(value)}")


def _as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _as_float(value)
    if not number.is_integer():
        raise _NotConvertible
    return int(number)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _NotConvertible
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _NotConvertible from None
    else:
        raise _NotConvertible
    if not math.isfinite(number):
        raise _NotConvertible
    return number


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _NotConvertible
    return value


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _NotConvertible
    return value


def _as_str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _NotConvertible
    return value


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    int: _as_int,
    float: _as_float,
    bool: _as_bool,
    str: _as_str,
    list[str]: _as_str_list,
}
_EXPECTED = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list[str]: "a list of strings",
    type(None): "null",
}


def _shown(value: Any) -> str:
    """How a wrong value is quoted in an error: strings and numbers as written, else the kind."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list {value!r}" if len(repr(value)) <= 40 else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: Any, label: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{label} must be a mapping, not {_shown(value)}")
    return value


def _scalar_mapping(value: Any, label: str) -> dict[str, Any]:
    """Loss hyperparameters: names to numbers (or strings / booleans the loss converts), or to
    lists of them (TRL's `loss_type: [sigmoid, bco_pair, sft]` and its `loss_weights`)."""
    values = _mapping(value, label)
    scalar = str | int | float | bool
    for key, item in values.items():
        is_list = isinstance(item, list) and all(isinstance(v, scalar) for v in item)
        if not (isinstance(item, scalar) or is_list):
            raise InputError(
                f"{label}: {key} must be a number, a string or a list of them, not {_shown(item)}"
            )
    return {
        str(key): list(item) if isinstance(item, list) else item for key, item in values.items()
    }


def _lora(value: Any, label: str, locate: Callable[[str], str], section: str) -> Any:
    """`lora: true` (defaults), a mapping of LoraSettings fields, or false/null for none."""
    if value is None or value is False:
        return None
    if value is True:
        return LoraSettings()
    if not isinstance(value, dict):
        raise InputError(f"{label} must be true, false or a mapping, not {_shown(value)}")
    _reject_unknown(value, LoraSettings, locate, "lora", f"{section}lora.")
    hints = get_type_hints(LoraSettings)
    converted = {
        name: convert(item, hints[name], f"{locate(name)}: field '{section}lora.{name}'")
        for name, item in value.items()
    }
    return LoraSettings(**converted)


def _peft(value: Any, label: str, locate: Callable[[str], str], section: str) -> Any:
    """`peft: NAME` or `peft: {type: NAME, load_in_4bit: BOOL, ...peft config arguments}`.

    The type is checked without importing anything; the arguments are checked by building
    peft's own config object (its fields and its validation), so a mistake is reported here,
    with its line, before any model or data is loaded.
    """
    from . import adapters

    if value is None or value is False:
        return None
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise InputError(f"{label} must be a type name or a mapping, not {_shown(value)}")
    where = f"{section}peft"
    if "type" not in value:
        raise InputError(f"{label}: needs {where}.type, one of {', '.join(adapters.PEFT_TYPES)}")
    try:
        name = adapters.check_type(value["type"])
    except InputError as exc:
        raise InputError(f"{locate('type')}: field '{where}.type': {exc}") from None
    load_in_4bit = convert(
        value.get("load_in_4bit", False),
        bool,
        f"{locate('load_in_4bit')}: field '{where}.load_in_4bit'",
    )
    args = {str(k): v for k, v in value.items() if k not in ("type", "load_in_4bit")}
    known = adapters.argument_names(name)
    for key in args:
        if key not in known:
            message = adapters.unknown_argument_error(name, key)
            raise InputError(f"{locate(key)}: field '{where}.{key}': {message}")
    try:
        adapters.build_config(name, args)
    except InputError as exc:
        raise InputError(f"{label}: {exc}") from None
    return PeftSettings(name, args, load_in_4bit)


def _reject_unknown(
    mapping: dict[str, Any], settings: type, locate: Callable[..., str], what: str, prefix: str
) -> None:
    """A misspelt key is an error at its line, with the closest known name: silently ignoring it
    would train with the default the user meant to change."""
    known = [f.name for f in fields(settings)]
    unknown = sorted(set(mapping) - set(known), key=str)
    if unknown:
        names = ", ".join(prefix + str(u) for u in unknown)
        raise InputError(
            f"{locate(unknown[0])}: unknown {what} setting(s) {names}"
            f"{did_you_mean(str(unknown[0]), known)}"
        )
