"""Where a local model's files are, and what identifies the answers they give.

Every local backend (`hf:`, `rm:`/`clf:`, `vllm:`) and the trainers name a checkpoint the same
way: a directory, a hub id (its snapshot), the built-in default model, or a PEFT adapter over
any of them. The identity is read from the files without loading a weight, because a fully
cached run must never load a model; a directory no model can be loaded from is refused here,
before a run is created.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import sha256_hex
from evalharness.errors import InputError
from evalharness.store.hashing import WEIGHT_SUFFIXES, checkpoint_hashes


def resolve_local_dir(spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    """Map a spec to a local checkpoint directory and the facts that identify what it computes.

    A local directory is identified by its contents (`checkpoint_hashes`: the weights and every
    other file a loader may read, config and tokenizer files included), a hub model by its
    snapshot's commit, a PEFT adapter also by its base model's facts. A directory a model cannot
    be loaded from is refused here, before a run is created (`check_loadable`).
    """
    if spec.backend == "builtin":
        from evalharness.backends.default_model import converted_dir, read_marker

        directory = converted_dir()
        marker = read_marker(directory) or {}
        facts = {
            "weights_sha256": marker.get("weights_sha256"),
            "source": spec.name,
            **checkpoint_hashes(directory, weights=False),
        }
        return directory, facts
    path = Path(spec.name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{spec.raw} is a file; give the checkpoint directory")
        directory = path.resolve()
        check_loadable(directory, spec.raw)
        facts = checkpoint_hashes(directory)
    else:
        directory, facts = _resolve_hub(spec)
        check_loadable(directory, f"{spec.raw} (hub snapshot {directory})")
    if (directory / ADAPTER_CONFIG).is_file():
        facts["base_model"] = _adapter_base(spec, directory)
    return directory, facts


#: A PEFT adapter directory's config; `base_model_name_or_path` names the model it adapts.
ADAPTER_CONFIG = "adapter_config.json"
#: Files that hold a tokenizer's vocabulary (fast, sentencepiece, BPE, WordPiece, tiktoken).
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "vocab.txt")
VOCABULARY_SUFFIXES = (".model", ".tiktoken")
#: Tokenizers that need no vocabulary file (bytes are the vocabulary).
VOCABULARY_FREE = ("ByT5Tokenizer", "CanineTokenizer", "PerceiverTokenizer")


def check_loadable(directory: Path, label: str, *, tokenizer: bool = True) -> None:
    """One-line errors for a directory a model (or its tokenizer) cannot be loaded from.

    Checked when the identity is computed, so a run never starts (and never leaves an
    `interrupted` run behind) on a checkpoint that fails at its first uncached request.
    """
    names = {p.name for p in directory.iterdir() if p.is_file()}
    if "config.json" not in names and ADAPTER_CONFIG not in names:
        raise InputError(
            f"{label}: no config.json (nor {ADAPTER_CONFIG}) in {directory}: not a "
            "transformers checkpoint directory"
        )
    if not any(Path(name).suffix in WEIGHT_SUFFIXES for name in names):
        raise InputError(f"{label}: no weight files (*.safetensors) in {directory}")
    if tokenizer and not _has_tokenizer(directory, names):
        raise InputError(
            f"{label}: no tokenizer in {directory} (none of {', '.join(VOCABULARY_FILES)}, "
            f"*.model, *.tiktoken or tokenizer_config.json); save the tokenizer there too "
            f"(tokenizer.save_pretrained)"
        )


def _has_tokenizer(directory: Path, names: set[str]) -> bool:
    if any(n in VOCABULARY_FILES or Path(n).suffix in VOCABULARY_SUFFIXES for n in names):
        return True
    if "tokenizer_config.json" not in names:
        return False
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return True  # unreadable: let the tokenizer say what is wrong with it
    if not isinstance(config, dict):
        return True
    # Remote code (`auto_map`) may keep its vocabulary under any name.
    return "auto_map" in config or config.get("tokenizer_class") in VOCABULARY_FREE


def _adapter_base(spec: ModelSpec, directory: Path, depth: int = 0) -> dict[str, Any]:
    """The identity facts of the model a PEFT adapter directory is applied to: transformers
    loads that base by the name in `adapter_config.json`, so its weights are the adapter's
    answers too."""
    where = directory / ADAPTER_CONFIG
    try:
        config = json.loads(where.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: not a JSON adapter config ({type(exc).__name__})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not isinstance(base, str):
        raise InputError(f"{where}: field 'base_model_name_or_path' is missing")
    base_spec = replace(
        spec, name=base, raw=f"{spec.backend}:{base}", revision=config.get("revision")
    )
    path = Path(base).expanduser()
    if path.is_dir():
        base_dir = path.resolve()
        check_loadable(base_dir, f"{where}: base model", tokenizer=False)
        facts = checkpoint_hashes(base_dir)
    else:
        base_dir, facts = _resolve_hub(base_spec)
    if (base_dir / ADAPTER_CONFIG).is_file():
        if depth >= 2:
            raise InputError(f"{where}: adapters on adapters nest too deep")
        facts["base_model"] = _adapter_base(base_spec, base_dir, depth + 1)
    return {"name": base, **facts}


def _resolve_hub(spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        snapshot = snapshot_download(spec.name, revision=spec.revision, allow_patterns=patterns)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise InputError(
            f"{spec.raw}: not a local directory and not available from the hub "
            f"({type(exc).__name__}); set HF_HUB_OFFLINE=0 to download or give a path"
        ) from None
    path = Path(snapshot)
    # Hub snapshots live in .../snapshots/<commit>: the commit pins every file in it.
    return path, {"hub_id": spec.name, "revision": path.name}


def read_chat_template(directory: Path) -> str | None:
    """The chat template as transformers would find it, read without loading the tokenizer."""
    jinja = directory / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        file = directory / name
        if file.exists():
            template = json.loads(file.read_text()).get("chat_template")
            if template:
                return template if isinstance(template, str) else json.dumps(template)
    return None


def dtype_source(directory: Path) -> Path:
    """The directory whose config.json declares the weights' dtype: a PEFT adapter's is its
    local base model's."""
    if (directory / "config.json").is_file() or not (directory / ADAPTER_CONFIG).is_file():
        return directory
    try:
        base = json.loads((directory / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return directory
    path = Path(base).expanduser() if isinstance(base, str) else None
    return path if path is not None and path.is_dir() else directory


def checkpoint_identity(
    backend: str,
    spec: ModelSpec,
    directory: Path,
    weights: dict[str, Any],
    *,
    dtype: str,
) -> dict[str, Any]:
    """What makes a local checkpoint's answers what they are, for every local backend: the
    checkpoint's files (`resolve_local_dir`: weights, config, tokenizer, chat template,
    decoding defaults) and the RESOLVED dtype (`Placement.dtype`), never the device:
    the same weights in the same dtype answer the same on every card (up to kernel rounding),
    and a default CPU run (auto = float32) keeps the cache an explicit float32 run made. The
    chat template's and generation config's own hashes are named apart too: `compare` warns
    when the template differs between two runs."""
    template = read_chat_template(directory)
    generation_config = directory / "generation_config.json"
    return {
        "backend": backend,
        "name": spec.raw,
        **weights,
        "dtype": dtype,
        "chat_template_sha256": sha256_hex(template) if template else None,
        "generation_config_sha256": (
            sha256_hex(generation_config.read_text()) if generation_config.exists() else None
        ),
    }
