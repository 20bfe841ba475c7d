"""Reading an lm-evaluation-harness task YAML safely, with errors that name file, line and field.

lm-eval's own loader builds its YAML loader on `yaml.FullLoader` when libyaml is absent and
imports `!function` helpers from any importable module. This reader is a `yaml.SafeLoader`
subclass whose only extra tag is `!function MODULE.NAME`, and it imports MODULE only from a
`.py` file inside the folder of the YAML that names it (lm-eval's `utils.process_docs` ->
`utils.py` beside the YAML). Importing that file runs its code: it is the user's own code,
placed there with the YAML, exactly as lm-eval runs it.

`include:` merges the included files first (in order, each resolved the same way), then the
file's own keys win, as lm-eval's `load_yaml` does. Each top-level key remembers the file that
set it, so an error points at the line the user has to fix even when it came from a base YAML.
Nothing here imports lm-eval: checking the fields against lm-eval's `TaskConfig`, metrics and
filters happens in `check_spec`, which needs it.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from evalharness.engine.requests import sha256_hex
from evalharness.errors import InputError
from evalharness.formats.records import YamlLines, read_text, read_yaml_lines

#: Top-level keys that only an lm-eval task YAML has (task.yaml has none of them).
LM_EVAL_KEYS = frozenset(
    {
        "task", "include", "task_alias", "tag", "group", "class", "task_list",
        "custom_dataset", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
        "validation_split", "test_split", "fewshot_split", "process_docs", "doc_to_text",
        "doc_to_target", "doc_to_choice", "doc_to_image", "doc_to_audio", "unsafe_code",
        "process_results", "use_prompt", "fewshot_delimiter", "fewshot_config", "num_fewshot",
        "metric_list", "generation_kwargs", "repeats", "filter_list", "should_decontaminate",
        "doc_to_decontamination_query", "gen_prefix", "metadata",
    }
)  # fmt: skip
#: Output types this harness runs; `loglikelihood_rolling` needs lm-eval's rolling windows.
OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "generate_until")
#: `generation_kwargs` that map onto `SamplingParams` (lm-eval's `normalize_gen_kwargs` names).
GENERATION_KWARGS = (
    "until", "max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens",
    "do_sample", "temperature", "top_p",
)  # fmt: skip
#: Fields this harness refuses, with the reason (each would run something else than the YAML).
REFUSED = {
    "doc_to_image": "multimodal tasks are not supported",
    "doc_to_audio": "multimodal tasks are not supported",
    "use_prompt": "promptsource prompts are not supported; write doc_to_text instead",
    "class": "a Python task class is not a YAML task; run it with lm-eval",
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class FunctionRef:
    """`!function MODULE.NAME` as written: resolved (imported) only when the task is built."""

    qualname: str
    line: int
    file: Path | None = None


class LmEvalLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` plus lm-eval's `!function` tag (kept as a `FunctionRef`)."""


def _function(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
    return FunctionRef(str(loader.construct_scalar(node)), node.start_mark.line + 1)  # type: ignore[arg-type]


LmEvalLoader.add_constructor("!function", _function)


@dataclass
class LmEvalSpec:
    """An lm-eval task YAML with its includes merged; `config` still holds `FunctionRef`s."""

    file: Path
    name: str
    config: dict[str, Any]
    #: The YAML (main or included) that set each top-level key, for `file:line` in errors.
    origins: dict[str, YamlLines]
    #: Every YAML read (the file and its includes), with its text: part of the data hash.
    texts: dict[Path, str] = field(default_factory=dict)

    def where(self, *keys: str | int) -> str:
        lines = self.origins.get(str(keys[0])) if keys else None
        return lines.where(*keys) if lines is not None else str(self.file)

    def fail(self, keys: tuple[str | int, ...], message: str) -> InputError:
        name = ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in keys)
        return InputError(f"{self.where(*keys)}: field {name.replace('.[', '[')!r}: {message}")


def read_config(path: Path) -> dict[str, Any] | None:
    """The top-level mapping of a YAML file (no includes), or None when it is not a mapping;
    used to tell an lm-eval YAML from a task.yaml."""
    raw, _ = read_yaml_lines(path, loader_class=LmEvalLoader)
    return raw if isinstance(raw, dict) else None


def is_lm_eval_config(raw: dict[str, Any]) -> bool:
    return any(key in LM_EVAL_KEYS for key in raw)


def load_lm_eval_yaml(path: Path) -> LmEvalSpec:
    """Read `path` and its includes; check what can be checked without lm-eval."""
    texts: dict[Path, str] = {}
    config, origins = _merged(path, (), texts)
    spec = LmEvalSpec(file=path, name="", config=config, origins=origins, texts=texts)
    if "group" in config:
        raise spec.fail(("group",), "an lm-eval group; pass the YAMLs of its tasks instead")
    for key, reason in REFUSED.items():
        if key in config:
            raise spec.fail((key,), reason)
    name = config.get("task")
    if name is None:
        raise InputError(f"{path}: missing field 'task' (the task's name)")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise spec.fail(("task",), f"{name!r} must be letters, digits, '_', '.' or '-'")
    spec.name = name
    return spec


def _merged(
    path: Path, chain: tuple[Path, ...], texts: dict[Path, str]
) -> tuple[dict[str, Any], dict[str, YamlLines]]:
    resolved = path.resolve()
    if resolved in chain:
        raise InputError(f"{path}: include cycle ({' -> '.join(p.name for p in (*chain, path))})")
    texts[resolved] = read_text(path)
    raw, lines = read_yaml_lines(path, loader_class=LmEvalLoader)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of lm-eval task fields")
    raw = {str(key): _stamp(value, path) for key, value in raw.items()}
    merged: dict[str, Any] = {}
    origins: dict[str, YamlLines] = {}
    includes = raw.pop("include", None)
    for index, include in enumerate(includes if isinstance(includes, list) else [includes]):
        if include is None:
            continue
        keys: tuple[str | int, ...] = (
            ("include", index) if isinstance(includes, list) else ("include",)
        )
        if not isinstance(include, str) or not include.strip():
            raise InputError(f"{lines.where(*keys)}: field 'include': must be a file name")
        target = Path(include).expanduser()
        target = target if target.is_absolute() else path.parent / target
        if not target.is_file():
            raise InputError(f"{lines.where(*keys)}: field 'include': no such file {target}")
        config, sub_origins = _merged(target, (*chain, resolved), texts)
        config.pop("task_list", None)  # lm-eval: it belongs to the included file only
        merged.update(config)
        origins.update(sub_origins)
    merged.update(raw)
    origins.update({key: lines for key in raw})
    return merged, origins


def _stamp(value: Any, path: Path) -> Any:
    """Record in each `FunctionRef` the YAML it was written in (its helpers sit beside it)."""
    if isinstance(value, FunctionRef):
        return replace(value, file=path)
    if isinstance(value, dict):
        return {key: _stamp(item, path) for key, item in value.items()}
    if isinstance(value, list):
        return [_stamp(item, path) for item in value]
    return value


# -- checks against lm-eval's own vocabulary ------------------------------------------------


def check_spec(spec: LmEvalSpec) -> None:
    """Every field against lm-eval's `TaskConfig`, metric and filter registries, so a typo is
    one line naming file:line, never lm-eval's traceback (or, for an unknown metric, a
    download from the hub: lm-eval looks unknown metric names up in HF Evaluate)."""
    import lm_eval.api.metrics  # noqa: F401 - fills the metric registry
    import lm_eval.filters  # noqa: F401 - fills the filter registry
    from lm_eval.api import registry
    from lm_eval.api.task import TaskConfig

    config = spec.config
    known = tuple(TaskConfig.__dataclass_fields__) + ("task_list",)
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise spec.fail((key,), f"not an lm-eval task field{hint}")
    output_type = config.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        extra = (
            " (rolling log-likelihood is not supported)"
            if output_type == "loglikelihood_rolling"
            else ""
        )
        raise spec.fail(("output_type",), f"{output_type!r}: use {', '.join(OUTPUT_TYPES)}{extra}")
    if config.get("unsafe_code"):
        raise spec.fail(("unsafe_code",), "tasks that execute model-written code are not supported")
    if config.get("dataset_path") is None and config.get("custom_dataset") is None:
        raise InputError(f"{spec.file}: missing field 'dataset_path' (e.g. json with data_files)")
    for key in ("num_fewshot", "repeats"):
        value = config.get(key)
        low = 0 if key == "num_fewshot" else 1
        if value is not None and (not _is_int(value) or value < low):
            raise spec.fail((key,), f"must be an integer >= {low}, not {value!r}")
    _check_mapping(spec, "dataset_kwargs")
    _check_mapping(spec, "fewshot_config")
    _check_mapping(spec, "metadata")
    _check_data_files(spec)
    _check_generation(spec, output_type)
    _check_metrics(spec, registry)
    _check_filters(spec, registry)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_mapping(spec: LmEvalSpec, key: str) -> None:
    value = spec.config.get(key)
    if value is not None and not isinstance(value, dict):
        raise spec.fail((key,), f"must be a mapping, not {value!r}")


def _check_data_files(spec: LmEvalSpec) -> None:
    """Local `data_files` must exist. As in lm-eval a relative path is read from the working
    directory; one found only beside the YAML is read from there."""
    kwargs = spec.config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    if files is None:
        return
    keys: tuple[str | int, ...] = ("dataset_kwargs", "data_files")
    if isinstance(files, (str, list)):
        kwargs["data_files"] = _existing(spec, files, keys)
    elif isinstance(files, dict):
        kwargs["data_files"] = {
            split: _existing(spec, value, (*keys, str(split))) for split, value in files.items()
        }
    else:
        raise spec.fail(keys, "must be a file, a list of files or a mapping split: file(s)")


def _existing(spec: LmEvalSpec, value: Any, keys: tuple[str | int, ...]) -> Any:
    if isinstance(value, list):
        return [_existing(spec, item, (*keys, index)) for index, item in enumerate(value)]
    if not isinstance(value, str) or not value.strip():
        raise spec.fail(keys, f"must be a file name, not {value!r}")
    if GLOB.search(value) or "://" in value:
        return value  # a pattern or a URL: `datasets` resolves it
    path = Path(value).expanduser()
    if path.is_file():
        return str(path)
    origin = spec.origins.get(str(keys[0]))
    beside_yaml = (origin.path if origin is not None else spec.file).parent / path
    if not path.is_absolute() and beside_yaml.is_file():
        return str(beside_yaml)
    raise spec.fail(keys, f"no such file {value}")


def _check_generation(spec: LmEvalSpec, output_type: str) -> None:
    kwargs = spec.config.get("generation_kwargs")
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise spec.fail(("generation_kwargs",), f"must be a mapping, not {kwargs!r}")
    for key, value in kwargs.items():
        keys = ("generation_kwargs", str(key))
        if key not in GENERATION_KWARGS:
            raise spec.fail(keys, f"not supported; use {', '.join(GENERATION_KWARGS)}")
        if key == "until":
            stops = value if isinstance(value, list) else [value]
            if not all(isinstance(s, str) for s in stops):
                raise spec.fail(keys, "must be a string or a list of strings")
        elif key.startswith("max_") and (not _is_int(value) or value < 1):
            raise spec.fail(keys, f"must be a positive integer, not {value!r}")
        elif key in ("temperature", "top_p") and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise spec.fail(keys, f"must be a number >= 0, not {value!r}")
        elif key == "do_sample" and not isinstance(value, bool):
            raise spec.fail(keys, f"must be true or false, not {value!r}")


def _listed(spec: LmEvalSpec, key: str, entries: str) -> list[Any]:
    """A list field of the config (empty when absent), refused when given but not a non-empty
    list; `entries` says what the list holds."""
    value = spec.config.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise spec.fail((key,), f"must be a list of {entries}")
    return value


def _check_metrics(spec: LmEvalSpec, registry: Any) -> None:
    metrics = _listed(spec, "metric_list", "{metric: NAME, ...}")
    names = sorted(registry.METRIC_REGISTRY.keys())
    for index, entry in enumerate(metrics):
        keys: tuple[str | int, ...] = ("metric_list", index)
        if not isinstance(entry, dict) or "metric" not in entry:
            raise spec.fail(keys, "each entry needs 'metric'")
        if entry.get("hf_evaluate"):
            raise spec.fail(
                (*keys, "hf_evaluate"), "HF Evaluate metrics download code from the hub; "
                "use an lm-eval metric or a !function metric beside the YAML"
            )  # fmt: skip
        metric = entry["metric"]
        if isinstance(metric, FunctionRef):
            continue
        if not isinstance(metric, str) or metric not in names:
            close = difflib.get_close_matches(str(metric), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise spec.fail((*keys, "metric"), f"unknown lm-eval metric {metric!r}{hint}")
        aggregation = entry.get("aggregation")
        if isinstance(aggregation, str) and aggregation not in registry.AGGREGATION_REGISTRY:
            raise spec.fail((*keys, "aggregation"), f"unknown aggregation {aggregation!r}")


def _check_filters(spec: LmEvalSpec, registry: Any) -> None:
    filters = _listed(spec, "filter_list", "{name: ..., filter: [...]}")
    known = sorted(registry.FILTER_REGISTRY.keys())
    seen: set[str] = set()
    for index, entry in enumerate(filters):
        keys: tuple[str | int, ...] = ("filter_list", index)
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise spec.fail(keys, "each entry needs a 'name'")
        if entry["name"] in seen:
            raise spec.fail((*keys, "name"), f"filter {entry['name']!r} is named twice")
        seen.add(entry["name"])
        steps = entry.get("filter")
        if not isinstance(steps, list) or not steps:
            raise spec.fail((*keys, "filter"), "must be a list of {function: NAME, ...}")
        for step_index, step in enumerate(steps):
            step_keys = (*keys, "filter", step_index)
            function = step.get("function") if isinstance(step, dict) else None
            if function is None:
                raise spec.fail(step_keys, "each step needs 'function'")
            if isinstance(function, FunctionRef):
                continue
            if function not in known:
                close = difflib.get_close_matches(str(function), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
                raise spec.fail((*step_keys, "function"), f"unknown filter {function!r}{hint}")


# -- `!function` helpers ----------------------------------------------------------------------


def resolve_functions(spec: LmEvalSpec) -> tuple[dict[str, Any], list[Path]]:
    """The config with every `FunctionRef` imported, and the helper files read.

    This runs the user's helper modules (only `.py` files inside the YAML's folder)."""
    helpers: list[Path] = []

    def resolve(value: Any, keys: tuple[str | int, ...]) -> Any:
        if isinstance(value, FunctionRef):
            function, source = _import_function(spec, value, keys)
            if source not in helpers:
                helpers.append(source)
            return function
        if isinstance(value, dict):
            return {k: resolve(v, (*keys, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, (*keys, i)) for i, v in enumerate(value)]
        return value

    config = {key: resolve(value, (key,)) for key, value in spec.config.items()}
    return config, helpers


def _import_function(
    spec: LmEvalSpec, ref: FunctionRef, keys: tuple[str | int, ...]
) -> tuple[Any, Path]:
    yaml_file = ref.file or spec.file
    where = f"{yaml_file}:{ref.line}"
    name = ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in keys).replace(".[", "[")
    label = f"{where}: field {name!r}: !function {ref.qualname}"
    module_path, _, function_name = ref.qualname.rpartition(".")
    if not module_path or not function_name:
        raise InputError(f"{label}: expected MODULE.FUNCTION (e.g. utils.process_docs)")
    folder = yaml_file.parent.resolve()
    source = (folder / (module_path.replace(".", "/") + ".py")).resolve()
    if not source.is_relative_to(folder) or not source.is_file():
        raise InputError(
            f"{label}: no {module_path.replace('.', '/')}.py beside the YAML (only helper files "
            "in the YAML's folder are imported)"
        )
    module = _load_module(source, label)
    function = getattr(module, function_name, None)
    if function is None:
        raise InputError(f"{label}: {source.name} has no {function_name!r}")
    return function, source


_MODULES: dict[tuple[Path, int], Any] = {}


def _load_module(source: Path, label: str) -> Any:
    """Import a helper file once per version of it (a module named after its path's hash)."""
    key = (source, source.stat().st_mtime_ns)
    if key in _MODULES:
        return _MODULES[key]
    module_name = f"evalharness_lm_eval_helper_{sha256_hex(str(source))[:16]}"
    loader_spec = importlib.util.spec_from_file_location(module_name, source)
    if loader_spec is None or loader_spec.loader is None:
        raise InputError(f"{label}: cannot import {source}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's helper failed: one line naming it
        sys.modules.pop(module_name, None)
        raise InputError(
            f"{label}: importing {source} failed ({type(exc).__name__}: {exc})"
        ) from None
    _MODULES[key] = module
    return module
