"""Model merging: weight averages of fine-tunes of one base model (model soups, WiSE-FT).

Fine-tunes that start from the same pre-trained weights tend to lie in one low-loss basin, so
averaging their weights often beats each of them without any extra inference cost:

- `uniform_soup`: the plain mean of every checkpoint (Wortsman et al. 2022, "Model soups");
- `greedy_soup`: checkpoints in order of their own held-out score, each kept only when adding
  it does not lower the soup's score, so one bad fine-tune cannot spoil the average;
- `interpolate`: `(1 - alpha) * a + alpha * b`, e.g. pre- and post-alignment weights (WiSE-FT,
  Wortsman et al. 2022) to trade the new behaviour against what the base model knew.

Weights are read from safetensors only: a pickled `.bin` checkpoint can run code when loaded.
Averages are computed in float32 (bfloat16 sums lose the small differences between fine-tunes)
and saved in the first checkpoint's dtype by `save_merged`, which writes a directory that
`hf:OUT` loads like any checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from evalharness.errors import InputError

StateDict = dict[str, torch.Tensor]
#: Called with the ingredients of each soup `greedy_soup` scores, and its score.
ScoreLog = Callable[[list[Path], float], None]

#: Files `save_merged` copies from the reference checkpoint: everything but weights and config.
TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
    "generation_config.json",
)
METHODS = ("uniform", "greedy", "linear")


# -- reading checkpoints -------------------------------------------------------------------
def weight_files(checkpoint: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (one file, or the shards)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise InputError(f"{checkpoint}: not a checkpoint directory")
    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise InputError(
            f"{checkpoint}: no .safetensors weights (pickled .bin weights are never read)"
        )
    return files


def describe(checkpoint: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every stored tensor, read from the headers only."""
    from safetensors import safe_open

    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in weight_files(checkpoint):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor_slice = handle.get_slice(key)
                found[key] = (tuple(tensor_slice.get_shape()), str(tensor_slice.get_dtype()))
    return found


def read_weights(checkpoint: Path) -> StateDict:
    """Every tensor of a checkpoint, as stored (dtype unchanged)."""
    from safetensors.torch import load_file

    state: StateDict = {}
    for file in weight_files(checkpoint):
        state.update(load_file(str(file)))
    return state


def _model_type(checkpoint: Path) -> str | None:
    config = Path(checkpoint) / "config.json"
    if not config.exists():
        return None
    return json.loads(config.read_text()).get("model_type")


def check_same_architecture(checkpoints: Sequence[Path]) -> None:
    """Every checkpoint has the first one's model type, tensor names and shapes.

    Checked from file headers before any weight is loaded, so a wrong directory fails in
    a second with the first key that differs instead of deep inside an average.
    """
    if not checkpoints:
        raise InputError("no checkpoints to merge")
    first = Path(checkpoints[0])
    reference, kind = describe(first), _model_type(first)
    for path in checkpoints[1:]:
        other = describe(Path(path))
        for key, (shape, _) in reference.items():
            if key not in other:
                raise InputError(f"{path}: has no weight {key!r} (unlike {first})")
            if other[key][0] != shape:
                raise InputError(
                    f"{path}: weight {key!r} has shape {list(other[key][0])}, "
                    f"{first} has {list(shape)}"
                )
        extra = [key for key in other if key not in reference]
        if extra:
            raise InputError(f"{path}: has weight {extra[0]!r}, which {first} lacks")
        if _model_type(Path(path)) != kind:
            raise InputError(
                f"{path}: model type {_model_type(Path(path))!r} differs from {first}'s {kind!r}"
            )


def checkpoint_dtype(checkpoint: Path) -> torch.dtype:
    """The dtype most of a checkpoint's floating-point weights are stored in."""
    names = Counter(
        dtype for _, dtype in describe(checkpoint).values() if dtype in _SAFETENSORS_FLOATS
    )
    if not names:
        return torch.float32
    return _SAFETENSORS_FLOATS[names.most_common(1)[0][0]]


_SAFETENSORS_FLOATS = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


# -- averaging ------------------------------------------------------------------------------
class _Sum:
    """A running float32 sum of checkpoints; integer tensors must agree and are kept as is."""

    def __init__(self) -> None:
        self.total: StateDict = {}
        self.count = 0

    def add(self, state: StateDict, scale: float = 1.0, where: Path | None = None) -> None:
        for key, tensor in state.items():
            if not tensor.is_floating_point():
                if key in self.total and not torch.equal(self.total[key], tensor):
                    raise InputError(f"{where}: non-float tensor {key!r} differs between inputs")
                self.total[key] = tensor
                continue
            value = tensor.to(torch.float32) * scale if scale != 1.0 else tensor.float()
            if key in self.total:
                self.total[key] = self.total[key] + value
            else:
                self.total[key] = value.clone()
        self.count += 1

    def mean(self) -> StateDict:
        return {
            key: tensor / self.count if tensor.is_floating_point() else tensor
            for key, tensor in self.total.items()
        }


def uniform_soup(checkpoints: Sequence[Path]) -> StateDict:
    """The mean of every checkpoint's weights (float32)."""
    check_same_architecture(checkpoints)
    total = _Sum()
    for path in checkpoints:
        total.add(read_weights(path), where=Path(path))
    return total.mean()


def interpolate(a: Path, b: Path, alpha: float) -> StateDict:
    """`(1 - alpha) * a + alpha * b` (float32): alpha 0 is `a`, 1 is `b`, 0.5 their mean.

    Alpha outside [0, 1] extrapolates (moves further along `b - a`); it is allowed, as task
    arithmetic does, but rarely what one wants.
    """
    if not math.isfinite(alpha):
        raise InputError(f"--alpha must be a finite number, not {alpha}")
    check_same_architecture([a, b])
    total = _Sum()
    total.add(read_weights(a), scale=1.0 - alpha, where=Path(a))
    total.add(read_weights(b), scale=alpha, where=Path(b))
    total.count = 1  # already weighted: the weights sum to 1
    return total.mean()


def greedy_soup(
    checkpoints: Sequence[Path],
    score: Callable[[StateDict], float],
    on_score: ScoreLog | None = None,
) -> tuple[StateDict, list[Path]]:
    """Greedy soup (Wortsman et al. 2022): the soup and the checkpoints it holds, best first.

    Each checkpoint is scored alone (higher is better); in descending order of that score
    (ties keep the input order), one is added to the soup only when the soup's score does not
    drop. The result therefore never scores below the best single checkpoint. `score` sees
    float32 weights; a NaN score counts as the worst possible.
    """
    check_same_architecture(checkpoints)
    paths = [Path(p) for p in checkpoints]

    def scored(state: StateDict, ingredients: list[Path]) -> float:
        value = float(score(state))
        value = -math.inf if math.isnan(value) else value
        if on_score is not None:
            on_score(ingredients, value)
        return value

    alone = [scored(_as_float32(read_weights(p)), [p]) for p in paths]
    order = sorted(range(len(paths)), key=lambda i: -alone[i])
    soup = _Sum()
    soup.add(read_weights(paths[order[0]]), where=paths[order[0]])
    chosen, best = [paths[order[0]]], alone[order[0]]
    for index in order[1:]:
        state = read_weights(paths[index])
        trial = _Sum()
        trial.total, trial.count = dict(soup.total), soup.count
        trial.add(state, where=paths[index])
        value = scored(trial.mean(), [*chosen, paths[index]])
        if value >= best:
            soup, best = trial, value
            chosen.append(paths[index])
    return soup.mean(), chosen


def _as_float32(state: StateDict) -> StateDict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# -- loading into a model and saving ----------------------------------------------------------
def load_into(model: Any, state: StateDict) -> None:
    """Copy `state` into `model` (cast to its dtype), keeping tied weights tied.

    The model's own state dict names every parameter, tied ones under each of their names
    (a tied LM head shares the embedding's storage). A checkpoint stores a tied pair once, so
    a name may be absent when an alias of it is given; two given aliases must agree.
    """
    own = model.state_dict()
    extra = [key for key in state if key not in own]
    if extra:
        raise InputError(f"weight {extra[0]!r} is not a weight of {type(model).__name__}")
    aliases: dict[int, list[str]] = {}
    for key, tensor in own.items():
        aliases.setdefault(tensor.data_ptr(), []).append(key)
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    for names in aliases.values():
        given = [name for name in names if name in state]
        if not given:
            missing = [name for name in names if name in parameters]
            if missing:
                raise InputError(f"merged weights lack {missing[0]!r}")
            continue  # a buffer the checkpoint does not store: keep the model's own
        if any(not torch.equal(state[given[0]], state[name]) for name in given[1:]):
            raise InputError(f"tied weights {given[0]!r} and {given[1]!r} differ")
    with torch.no_grad():
        for key, tensor in state.items():
            own[key].copy_(tensor)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def save_merged(
    state_dict: StateDict, like: Path, out: Path, info: dict[str, Any] | None = None
) -> Path:
    """Write a checkpoint directory `hf:OUT` loads: `like`'s architecture with `state_dict`.

    Weights go through the model class itself (`save_pretrained`, safetensors), so tied and
    renamed weights are saved as transformers expects, in `like`'s dtype. Tokenizer files and
    `generation_config.json` are copied byte for byte: the merged model must prompt and decode
    exactly as its inputs did. `merge.json` records `info` (method, inputs, alpha, chosen).
    """
    from transformers import AutoModelForCausalLM

    like, out = Path(like), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not an empty directory")
    _quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(like, dtype=checkpoint_dtype(like))
    load_into(model, state_dict)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for pattern in TOKENIZER_FILES:
        for file in like.glob(pattern):
            if file.is_file():
                shutil.copy2(file, out / file.name)
    record = {"like": str(like), "dtype": str(model.dtype).removeprefix("torch."), **(info or {})}
    (out / "merge.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


# -- held-out score for greedy soups ----------------------------------------------------------
class HeldoutLikelihood:
    """Mean log-likelihood per continuation token of held-out `{context, continuation}` rows.

    The rows and their tokenisation are those of `evalharness score` (the lm-eval split); one
    float32 model of `like`'s architecture is loaded once, on `device` (`auto`: the first
    accelerator, `evalharness.backends.devices`), and each soup's weights are copied into it, so
    scoring a soup costs a forward pass, not a save and a reload. float32 even on a GPU: soups of
    one base differ by little, and 16-bit rounding could decide which checkpoint joins the soup.
    """

    def __init__(
        self, rows_file: Path, like: Path, batch_size: int = 8, device: str = "auto"
    ) -> None:
        from evalharness.backends.devices import resolve_device
        from evalharness.backends.hf import HFBackend
        from evalharness.backends.spec import parse_model_spec
        from evalharness.formats.score_rows import read_score_rows

        rows = read_score_rows(str(rows_file), "--heldout")
        if not rows:
            raise InputError(f"{rows_file}: no rows to score")
        self.device = resolve_device(device)
        spec = parse_model_spec(f"hf:{like}", dtype="float32", device=str(self.device))
        backend = HFBackend(spec)
        self.model = backend.model.to(self.device)
        self.pad_id = backend.tokenizer.pad_token_id
        self.batch_size = batch_size
        self.pairs = []
        for row in rows:
            context, continuation = backend.encode_pair(row.request)
            if not continuation:
                raise InputError(f"{row.where}: no continuation tokens after the context")
            self.pairs.append((context, continuation))
        self.pairs.sort(key=lambda pair: len(pair[0]) + len(pair[1]))

    def __call__(self, state: StateDict) -> float:
        from evalharness.kernels.causal_lm import causal_lm_token_stats
        from evalharness.kernels.stats import IGNORE_INDEX

        load_into(self.model, state)
        total, count = 0.0, 0
        for start in range(0, len(self.pairs), self.batch_size):
            chunk = self.pairs[start : start + self.batch_size]
            width = max(len(c) + len(t) for c, t in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            for row, (context, continuation) in enumerate(chunk):
                sequence = context + continuation
                input_ids[row, : len(sequence)] = torch.tensor(sequence)
                attention[row, : len(sequence)] = 1
                labels[row, len(context) : len(sequence)] = torch.tensor(continuation)
            with torch.inference_mode():
                stats = causal_lm_token_stats(
                    self.model,
                    input_ids.to(self.device),
                    attention.to(self.device),
                    labels.to(self.device),
                )
            total += float(stats.logprobs.sum())
            count += sum(len(t) for _, t in chunk)
        return total / count


# -- the `evalharness merge` command --------------------------------------------------------
def merge_command(
    method: str,
    models: Sequence[str],
    out: str,
    alpha: float = 0.5,
    heldout: str | None = None,
    device: str = "auto",
) -> int:
    """Merge checkpoint directories into `out` and print what was done; `device` is where
    greedy soups are scored (averaging itself reads and sums safetensors on the host)."""
    paths = [Path(m.removeprefix("hf:")).expanduser() for m in models if m.strip()]
    if method not in METHODS:
        raise InputError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if len(paths) < 2:
        raise InputError("--models needs at least two checkpoint directories, comma-separated")
    if method == "linear" and len(paths) != 2:
        raise InputError(f"--method linear needs exactly 2 models, got {len(paths)}")
    if method == "greedy" and not heldout:
        raise InputError("--method greedy needs --heldout FILE.jsonl to score soups")
    if heldout:
        from evalharness.formats.score_rows import read_score_rows

        read_score_rows(heldout, "--heldout")  # a bad file fails before any checkpoint is read
    target = Path(out).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"--out {target}: exists and is not an empty directory")
    info: dict[str, Any] = {"method": method, "inputs": [str(p) for p in paths]}
    if method == "uniform":
        state = uniform_soup(paths)
        chosen = paths
        summary = f"uniform soup of {len(paths)} checkpoints"
    elif method == "linear":
        state = interpolate(paths[0], paths[1], alpha)
        chosen = paths
        info["alpha"] = alpha
        summary = f"(1 - {alpha:g}) * {paths[0]} + {alpha:g} * {paths[1]}"
    else:
        check_same_architecture(paths)
        scorer = HeldoutLikelihood(Path(heldout or ""), paths[0], device=device)
        scores: list[dict[str, Any]] = []

        def log(ingredients: list[Path], value: float) -> None:
            scores.append({"soup": [str(p) for p in ingredients], "score": value})
            print(f"  {value:.5f} mean logprob/token: {', '.join(str(p) for p in ingredients)}")

        state, chosen = greedy_soup(paths, scorer, on_score=log)
        info.update(heldout=str(heldout), scores=scores)
        summary = f"greedy soup of {len(chosen)} of {len(paths)} checkpoints"
    info["chosen"] = [str(p) for p in chosen]
    save_merged(state, paths[0], target, info)
    print(f"{summary} → {target}")
    if method == "greedy":
        print(f"chosen: {', '.join(str(p) for p in chosen)}")
    print(f"use it as --model hf:{target}")
    return 0
