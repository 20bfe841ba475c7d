"""Model specs: one string names a model everywhere (`hf:PATH_OR_HUB_ID`, `openai:MODEL`, alias)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from evalharness.backends.devices import parse_device, parse_device_map
from evalharness.errors import InputError

DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"
ALIASES = {
    DEFAULT_MODEL_ALIAS: "builtin:smollm2-135m-instruct",
    "smollm2": "builtin:smollm2-135m-instruct",
    "default": "builtin:smollm2-135m-instruct",
}
#: Decoding-time alignment wrappers around a generating model (`backends/urial.py`,
#: `args_decoding.py`, `deal.py`), beside best-of-N (`bon:`).
WRAPPERS = ("bon", "urial", "args", "deal")
BACKENDS = ("hf", "vllm", "openai", "builtin", "rm", "clf", "outputs", *WRAPPERS)
#: Backends that generate text: what best-of-N (`bon:`) samples from, or judges with.
GENERATORS = ("hf", "vllm", "builtin", "openai")
#: Backends that continue raw text (`CompleteRequest`): what URIAL's plain-text prompt needs.
RAW_TEXT_GENERATORS = ("hf", "vllm", "builtin")
#: Backends whose next-token distribution is at hand: what token-level search (ARGS, DeAL) needs.
TOKEN_LEVEL_GENERATORS = ("hf", "builtin")
DTYPES = ("float32", "bfloat16", "float16", "auto")
#: `--batch-size auto` (as lm-evaluation-harness spells it).
AUTO_BATCH = "auto"
#: Requests handed to a backend per call under `--batch-size auto`: generation batches this
#: many; scoring sizes its own batches by memory.
AUTO_BATCH_ROWS = 64


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec plus the options that change what the model computes.

    `dtype` (resolved: `auto` is the checkpoint's dtype on an accelerator, float32 on the CPU,
    see `evalharness.backends.devices`), `revision`, `base_url` and (vLLM) `max_model_len` are
    part of the model's identity; `device`, `device_map`, `batch_size`, `concurrency`,
    `api_key_env`, the other vLLM engine options and `workers` only change where and how fast it
    runs.

    `api_key_env` names the variable holding the key (`openai:` sends it, `serve` demands it).
    None, when no variable was named, sends `$OPENAI_API_KEY` to api.openai.com only, never to
    another `base_url`: a key meant for OpenAI must not leak to a local or third-party server.
    """

    backend: str
    name: str
    raw: str
    revision: str | None = None
    dtype: str = "auto"
    #: Where local weights run: `auto` (the first accelerator, else the CPU), cpu, cuda[:N], mps.
    device: str = "auto"
    #: accelerate's placement over every visible GPU (`auto`) for a model too large for one.
    device_map: str | None = None
    batch_size: int = 8
    #: `--batch-size auto`: local models size their scoring batches by memory (a token budget)
    #: instead of `batch_size` rows; `batch_size` is then the requests handed over per call.
    auto_batch: bool = False
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 600.0
    trust_remote_code: bool = False
    # vLLM engine options (`vllm:` only).
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    #: None: 0.9 of a GPU's memory, or 0.3 of the RAM on vLLM's CPU build (its KV cache).
    gpu_memory_utilization: float | None = None
    prefix_caching: bool = True
    #: None: eager on a CPU (compiling costs minutes at start there), CUDA graphs on a GPU.
    enforce_eager: bool | None = None
    #: Backend replicas run as Ray actors (local models); 1 runs the model in this process.
    workers: int = 1

    def with_options(self, **options: object) -> ModelSpec:
        given = {k: v for k, v in options.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]


def parse_model_spec(spec: str, **options: object) -> ModelSpec:
    """Parse `hf:PATH[@REV]`, `openai:MODEL` or an alias; raise InputError on anything else."""
    text = spec.strip()
    resolved = ALIASES.get(text.lower(), text)
    backend, sep, name = resolved.partition(":")
    if not sep or backend not in BACKENDS or not name:
        raise InputError(
            f"unknown model spec {spec!r}: use hf:PATH_OR_HUB_ID, vllm:PATH_OR_HUB_ID, "
            "openai:MODEL, outputs:MODEL_OUTPUTS.json "
            f"or one of the aliases {', '.join(sorted(ALIASES))}"
        )
    revision = None
    if backend in ("hf", "vllm", "rm", "clf") and "@" in name:
        name, _, revision = name.rpartition("@")
    if backend == "bon":
        split_best_of_n(name)  # a malformed spec fails here, before anything loads
    elif backend == "urial":
        split_urial(name)
    elif backend in ("args", "deal"):
        split_reward_guided(backend, name)
    model = ModelSpec(backend=backend, name=name, raw=text, revision=revision)
    if options.get("batch_size") == AUTO_BATCH:
        options = {**options, "batch_size": AUTO_BATCH_ROWS, "auto_batch": True}
    model = model.with_options(**options)
    if model.dtype not in DTYPES:
        raise InputError(f"--dtype {model.dtype!r} is not one of {', '.join(DTYPES)}")
    model = placed(model)
    if model.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if model.workers < 1:
        raise InputError("--workers must be at least 1")
    if model.tensor_parallel_size < 1:
        raise InputError("--tensor-parallel-size must be at least 1")
    if model.max_model_len is not None and model.max_model_len < 1:
        raise InputError("--max-model-len must be at least 1")
    if model.gpu_memory_utilization is not None and not 0.0 < model.gpu_memory_utilization <= 1.0:
        raise InputError("--gpu-memory-utilization must be in (0, 1]")
    return model


def placed(model: ModelSpec, device: str | None = None, device_map: str | None = None) -> ModelSpec:
    """`model` with `device` / `device_map` (when given) checked and normalised.

    `--device-map` spreads the model over every visible GPU, which an explicit single device
    contradicts: giving both is an error rather than a silent choice of one.
    """
    model = model.with_options(device=device, device_map=device_map)
    model = replace(
        model, device=parse_device(model.device), device_map=parse_device_map(model.device_map)
    )
    if model.device_map is not None and model.device != "auto":
        raise InputError(
            f"--device-map {model.device_map} places the model over every visible GPU; it "
            f"cannot be combined with --device {model.device} (leave one of them out)"
        )
    return model


def wrapped_model_spec(spec: ModelSpec, model: str) -> ModelSpec:
    """The model a wrapper spec (`bon:`, `urial:`, `args:`, `deal:`) wraps: `model` parsed, with
    the wrapper's own options (the command line's `--dtype`, `--batch-size`, ...), which
    configure the wrapped model."""
    wrapped = parse_model_spec(model)
    return replace(
        spec,
        backend=wrapped.backend,
        name=wrapped.name,
        raw=wrapped.raw,
        revision=wrapped.revision,
    )


def split_best_of_n(name: str) -> tuple[int, str, str]:
    """`N:SCORER:MODEL` (a `bon:` spec without its prefix) as N, scorer spec and model spec.

    Both specs hold colons of their own (`bon:4:rm:PATH:hf:PATH`), so the split is the first
    colon where the left side is a scorer (`rm:PATH`, `self`, or an LLM judge spec) and the
    right side a model that generates.
    """
    count, _, rest = name.partition(":")
    if not count.isdigit() or int(count) < 1:
        raise InputError(f"bon:{name}: N must be a whole number of samples, at least 1")
    for index, char in enumerate(rest):
        if char == ":" and _parses(rest[:index], scorer=True) and _parses(rest[index + 1 :]):
            return int(count), rest[:index], rest[index + 1 :]
    raise InputError(
        f"bon:{name}: expected bon:N:SCORER:MODEL, SCORER rm:PATH, self or a judge model, "
        "MODEL an hf:, openai: or builtin model (e.g. bon:4:rm:RM_DIR:hf:MODEL_DIR)"
    )


def _parses(text: str, scorer: bool = False, backends: tuple[str, ...] = GENERATORS) -> bool:
    if scorer and text == "self":
        return True
    try:
        backend = parse_model_spec(text).backend
    except InputError:
        return False
    return backend in backends or (scorer and backend == "rm")


#: Options each wrapper's spec takes (`args:k=8,w=2:rm:RM:hf:MODEL`), with their types.
WRAPPER_OPTIONS: dict[str, dict[str, type]] = {
    "urial": {"prompt": str},
    "args": {"k": int, "w": float, "max_tokens": int},
    "deal": {"k": int, "beam": int, "lookahead": int, "max_tokens": int},
}
#: The smallest value each whole-number option may take.
OPTION_MINIMUM = {"k": 1, "beam": 1, "lookahead": 0, "max_tokens": 1}


def split_options(backend: str, name: str) -> tuple[dict[str, int | float | str], str]:
    """A wrapper spec's leading `key=value,key=value:` segment, parsed, and the rest of `name`.

    The options segment is optional (its absence means the defaults); it is told from the
    wrapped spec by its `=`, which no model spec's first segment holds. Values hold no `,` or
    `:`; an unknown key or a value of the wrong type is a one-line error naming both.
    """
    head, sep, rest = name.partition(":")
    if not sep or "=" not in head:
        return {}, name
    allowed = WRAPPER_OPTIONS[backend]
    options: dict[str, int | float | str] = {}
    for item in head.split(","):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in allowed or not value:
            raise InputError(
                f"{backend}:{name}: option {item!r} is not one of "
                f"{', '.join(f'{k}=...' for k in allowed)}"
            )
        try:
            options[key] = allowed[key](value)
        except ValueError:
            kind = "a whole number" if allowed[key] is int else "a number"
            raise InputError(f"{backend}:{name}: option {key}={value!r} must be {kind}") from None
        if isinstance(options[key], float) and not math.isfinite(options[key]):
            # A NaN or infinite weight turns every score into NaN: sampling would crash mid-run.
            raise InputError(f"{backend}:{name}: option {key}={value!r} must be a finite number")
        least = OPTION_MINIMUM.get(key)
        if least is not None and options[key] < least:  # type: ignore[operator]
            raise InputError(f"{backend}:{name}: option {key} must be at least {least}")
    return options, rest


def split_urial(name: str) -> tuple[dict[str, int | float | str], str]:
    """`[prompt=FILE:]MODEL` (a `urial:` spec without its prefix) as options and model spec."""
    options, model = split_options("urial", name)
    if not _parses(model, backends=RAW_TEXT_GENERATORS):
        raise InputError(
            f"urial:{name}: expected urial:[prompt=FILE:]MODEL, MODEL an hf:, vllm: or builtin "
            "model that continues raw text (e.g. urial:hf:BASE_MODEL_DIR)"
        )
    return options, model


def split_reward_guided(backend: str, name: str) -> tuple[dict[str, int | float | str], str, str]:
    """`[OPTIONS:]rm:RM:MODEL` (an `args:` or `deal:` spec without its prefix) as options,
    reward-model spec and model spec; MODEL must expose its next-token distribution."""
    options, rest = split_options(backend, name)
    for index, char in enumerate(rest):
        if char != ":" or not rest.startswith("rm:"):
            continue
        reward, model = rest[:index], rest[index + 1 :]
        if _parses(reward, backends=("rm",)) and _parses(model, backends=TOKEN_LEVEL_GENERATORS):
            return options, reward, model
    raise InputError(
        f"{backend}:{name}: expected {backend}:[OPTIONS:]rm:REWARD_MODEL:MODEL, MODEL an hf: or "
        f"builtin model (e.g. {backend}:rm:RM_DIR:hf:MODEL_DIR)"
    )


def batch_size_option(text: str) -> int | str:
    """`--batch-size`: a positive number of requests, or `auto`."""
    if text.strip().lower() == AUTO_BATCH:
        return AUTO_BATCH
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--batch-size {text!r} is not a number or 'auto'") from None
