"""`hf:` backend: a transformers causal LM, batched, loaded only when a request misses the cache."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalharness.backends import devices
from evalharness.backends.base import Backend, all_results, cut_at_stop
from evalharness.backends.context import causal_lm_limit, fit_prompt, fit_scored
from evalharness.backends.prompts import PromptEncoder, stop_token_ids
from evalharness.backends.spec import ModelSpec
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateRequest,
    GenerateResult,
    Message,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    sha256_hex,
)
from evalharness.errors import InputError
from evalharness.store.hashing import WEIGHT_SUFFIXES, checkpoint_hashes

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Placement:
    """Where a spec's weights run and in what dtype, resolved once per backend
    (`evalharness.backends.devices` is the rule): the dtype is part of the identity, the rest is
    not."""

    #: `cpu`, `cuda:N`, `mps`: a name, so a CPU machine decides it without importing torch.
    device_name: str
    dtype: str
    device_map: str | None = None

    @property
    def device(self) -> Any:
        import torch

        return torch.device(self.device_name)

    @property
    def device_type(self) -> str:
        """`cpu`, `cuda` or `mps`, without importing torch."""
        return self.device_name.partition(":")[0]

    def record(self) -> dict[str, Any]:
        """What provenance keeps: device, dtype, placement and the card's name."""
        return devices.describe(self.device_name, self.dtype, self.device_map)

    def load_options(self) -> dict[str, Any]:
        """`from_pretrained` keywords that load the weights in this dtype straight onto the
        device (never a full copy on the host first)."""
        return {
            "dtype": devices.torch_dtype(self.dtype),
            **devices.placement(self.device_name, self.device_map),
        }


def resolve_placement(spec: ModelSpec, directory: Path) -> Placement:
    """`spec.device` and `spec.dtype` made concrete for this machine; a one-line InputError for
    a device it lacks (raised when the backend is built, so before any run is created).

    A bare `cuda` becomes the current CUDA device's index, so provenance names the card.
    """
    device = devices.resolve_device_name(spec.device)
    dtype = devices.resolve_dtype(spec.dtype, device, dtype_source(directory))
    return Placement(device, dtype, spec.device_map)


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


def load_pretrained(
    spec: ModelSpec, directory: Path, model_class: Any, placement: Placement | None = None
) -> tuple[Any, Any]:
    """Tokenizer and model (eval mode) from a checkpoint, as every local backend loads them:
    in the resolved dtype, straight onto the resolved device (`resolve_placement` when no
    `placement` is given)."""
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Our own progress bars and one-line errors are the interface; keep transformers quiet.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if "OMP_NUM_THREADS" not in os.environ:
        # One thread per core this process may use (affinity and container limits honoured).
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    placement = placement or resolve_placement(spec, directory)
    trust = spec.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust)
    model = model_class.from_pretrained(
        directory, trust_remote_code=trust, **placement.load_options()
    )
    return tokenizer, model.eval()


def input_device(model: Any) -> Any:
    """Where a model's inputs go: its device, the first one under a device map."""
    return getattr(model, "device", None)


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


#: Prompts in one batch sharing at least this many leading tokens reuse one prefix KV cache.
PREFIX_CACHE_MIN_TOKENS = 256

#: Decoding settings shared by a batch: sampling, stop strings, and whether the text is kept
#: verbatim (`CompleteRequest.verbatim`) or stripped.
Decoding = tuple[SamplingParams, tuple[str, ...], bool]


class GeneratedStopStrings:
    """A stopping criterion: a row is done once a stop string occurs in its *generated* text.

    transformers' own `stop_strings` also match across the prompt's end (a prompt ending in
    "\n" and a generated "\n" would stop a "\n\n" task after one token), which OpenAI's API,
    vLLM and lm-eval's `hf` model never do. As lm-eval's `MultiTokenEOSCriteria`, only the last
    few generated tokens are decoded at each step.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_width = prompt_width
        lengths = [len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stops]
        self.lookback = max(lengths, default=0) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tails = input_ids[:, self.prompt_width :][:, -self.lookback :]
        texts = self.tokenizer.batch_decode(tails)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest common leading token run, always leaving each prompt one token of its own
    (generation needs at least one uncached input token)."""
    if not prompts:
        return []
    limit = min(len(p) for p in prompts) - 1
    length = 0
    first = prompts[0]
    while length < limit and all(p[length] == first[length] for p in prompts[1:]):
        length += 1
    return first[:length]


class HFBackend(Backend):
    """Batched generation (left padding, chat template) and continuation scoring."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = spec.batch_size
        self.directory, weights = resolve_local_dir(spec)
        self.placement = resolve_placement(spec, self.directory)
        self._identity = checkpoint_identity(
            "hf", spec, self.directory, weights, dtype=self.placement.dtype
        )
        self._model: Any = None
        self._tokenizer: Any = None
        self._prompts: PromptEncoder | None = None

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def device_record(self) -> dict[str, Any] | None:
        return self.placement.record()

    # -- loading -------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM

        self._tokenizer, self._model = load_pretrained(
            self.spec, self.directory, AutoModelForCausalLM, self.placement
        )
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token

    @property
    def model(self) -> Any:
        self._load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    def _on_device(self, tensor: Any) -> Any:
        """Inputs go where the model is: its device (the first one under a device map), for a
        loaded checkpoint and a model handed over by a training loop alike."""
        device = input_device(self.model)
        return tensor if device is None or tensor.device == device else tensor.to(device)

    @property
    def context_limit(self) -> int | None:
        """Tokens the model reads at most (prompt plus generated); None when nothing says."""
        return causal_lm_limit(self.model.config, self.tokenizer)

    def stop_token_ids(self) -> list[int]:
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        return stop_token_ids(self.tokenizer.eos_token_id, configured)

    # -- prompts -------------------------------------------------------------------------
    @property
    def prompts(self) -> PromptEncoder:
        if self._prompts is None:
            self._prompts = PromptEncoder(self.tokenizer)
        return self._prompts

    def render_chat(self, messages: Sequence[Message]) -> str:
        return self.prompts.render_chat(messages)

    def encode(self, text: str, *, templated: bool) -> list[int]:
        return self.prompts.encode(text, templated=templated)

    # -- generation ----------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        encoded = [self.encode(self.render_chat(r.messages), templated=True) for r in requests]
        return self._generate_fitted(encoded, [(r.sampling, (), False) for r in requests])

    def complete(self, requests: Sequence[CompleteRequest]) -> list[GenerateResult]:
        encoded = [self.encode(r.prompt, templated=False) for r in requests]
        return self._generate_fitted(encoded, [(r.sampling, r.stop, r.verbatim) for r in requests])

    def _generate_fitted(
        self, encoded: list[list[int]], settings: list[Decoding]
    ) -> list[GenerateResult]:
        """Prompts too long for the context lose their start (`fit_prompt`); their results
        say `truncated`."""
        limit = self.context_limit
        fitted = [
            fit_prompt(prompt, sampling.max_new_tokens, limit)
            for prompt, (sampling, _, _) in zip(encoded, settings, strict=True)
        ]
        results = self._generate_encoded([prompt for prompt, _ in fitted], settings)
        return [
            replace(result, truncated=True) if cut else result
            for result, (_, cut) in zip(results, fitted, strict=True)
        ]

    def _generate_encoded(
        self, encoded: list[list[int]], settings: list[Decoding]
    ) -> list[GenerateResult]:
        """Group by decoding settings, sort by length, generate in left-padded batches."""
        results: list[GenerateResult | None] = [None] * len(encoded)
        groups: dict[Decoding, list[int]] = defaultdict(list)
        for index, setting in enumerate(settings):
            groups[setting].append(index)
        for (sampling, stop, verbatim), indices in groups.items():
            prefix = shared_prefix([encoded[i] for i in indices])
            if len(indices) > 1 and len(prefix) >= PREFIX_CACHE_MIN_TOKENS:
                # Few-shot prompts that share their demonstrations: prefill those once.
                outputs = self.generate_with_prefix(
                    prefix, [encoded[i] for i in indices], sampling, stop, verbatim=verbatim
                )
                for index, output in zip(indices, outputs, strict=True):
                    results[index] = output
                continue
            order = sorted(indices, key=lambda i: len(encoded[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                outputs = self.generate_token_ids(
                    [encoded[i] for i in chunk], sampling, stop, verbatim=verbatim
                )
                for index, output in zip(chunk, outputs, strict=True):
                    results[index] = output
        return all_results(results)

    def generate_with_prefix(
        self,
        prefix: list[int],
        prompts: list[list[int]],
        sampling: SamplingParams,
        stop: tuple[str, ...] = (),
        *,
        verbatim: bool = False,
    ) -> list[GenerateResult]:
        """Prompts that all start with `prefix`: its KV cache is computed once and copied into
        each generation, so only each prompt's own tail is prefilled.

        This is what makes long in-context learning affordable: every query of a LIConBench
        round shares thousands of demonstration tokens.
        """
        import torch
        from transformers import DynamicCache

        cache = DynamicCache()
        with torch.inference_mode():
            self.model(
                input_ids=self._on_device(torch.tensor([prefix])),
                past_key_values=cache,
                use_cache=True,
            )
        results = []
        for prompt in prompts:
            results += self.generate_token_ids(
                [prompt], sampling, stop, prefix_cache=cache, verbatim=verbatim
            )
        return results

    def generate_token_ids(
        self,
        prompts: list[list[int]],
        sampling: SamplingParams,
        stop: tuple[str, ...] = (),
        prefix_cache: Any = None,
        *,
        verbatim: bool = False,
    ) -> list[GenerateResult]:
        """One left-padded batch, decoded (and cut at the first stop string); stripped unless
        `verbatim` (`CompleteRequest.verbatim`)."""
        results = []
        for prompt, (new_tokens, finish) in zip(
            prompts, self.generate_ids(prompts, sampling, stop, prefix_cache), strict=True
        ):
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, stop)
            # Ended early without a stop token: a stop string did it (its match may lie in a
            # special token that decoding drops).
            early = stop and len(new_tokens) < sampling.max_new_tokens
            finish = "stop" if stopped or early else finish
            results.append(
                GenerateResult(
                    text=text if verbatim else text.strip(),
                    n_prompt_tokens=len(prompt),
                    n_generated_tokens=len(new_tokens),
                    finish_reason=finish,
                )
            )
        return results

    def generate_ids(
        self,
        prompts: list[list[int]],
        sampling: SamplingParams,
        stop: tuple[str, ...] = (),
        prefix_cache: Any = None,
        streamer: Any = None,
        keep_stop_token: bool = False,
    ) -> list[tuple[list[int], str]]:
        """One left-padded batch through `model.generate`: new token ids (cut at the first stop
        token) and the finish reason ("stop" or "length") per prompt.

        `prefix_cache` (one prompt only) holds the KV cache of the prompt's first tokens; a copy
        is used, so the same cache serves the next prompt. `streamer` (one prompt only) is a
        transformers streamer that sees each new token as it is generated (the server's SSE).
        `keep_stop_token` keeps the stop token that ended a row (the server reports it in
        logprobs, as vLLM does, and lm-eval relies on it).
        """
        import copy

        import torch
        from transformers import StoppingCriteriaList

        if sampling.max_new_tokens == 0:
            return [([], "length") for _ in prompts]
        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention[row, width - len(prompt) :] = 1
        stop_ids = self.stop_token_ids()
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": pad_id,
            "eos_token_id": stop_ids,
        }
        if prefix_cache is not None:
            assert len(prompts) == 1, "a prefix cache serves one prompt at a time"
            kwargs["past_key_values"] = copy.deepcopy(prefix_cache)
        if streamer is not None:
            assert len(prompts) == 1, "a streamer follows one prompt"
            kwargs["streamer"] = streamer
        if stop:
            # Ends each row at a stop string instead of running to max_new_tokens.
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [GeneratedStopStrings(self.tokenizer, stop, width)]
            )
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            torch.manual_seed(sampling.seed)
            kwargs.update(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=None
            )
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=self._on_device(input_ids),
                attention_mask=self._on_device(attention),
                **kwargs,
            )
        outputs = []
        for row in range(len(prompts)):
            new_tokens = output[row, width:].tolist()
            finish = "length"
            for position, token in enumerate(new_tokens):
                if token in stop_ids:
                    new_tokens, finish = new_tokens[: position + keep_stop_token], "stop"
                    break
            outputs.append((new_tokens, finish))
        return outputs

    # -- scoring -------------------------------------------------------------------------
    def encode_pair(self, request: ScoreRequest) -> tuple[list[int], list[int]]:
        return self.prompts.encode_pair(request)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        limit = self.context_limit
        # The model reads all but the last token: limit + 1 tokens fit, as lm-eval counts.
        fitted = [
            (fit_scored(context, continuation, None if limit is None else limit + 1), continuation)
            for context, continuation in self.prompts.encode_scored_pairs(requests)
        ]
        pairs = [(context, continuation) for (context, _), continuation in fitted]
        by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, (context, _) in enumerate(pairs):
            by_context[tuple(context)].append(index)
        results: list[ScoreResult | None] = [None] * len(requests)
        singles = [ix[0] for ix in by_context.values() if len(ix) == 1]
        for start in range(0, len(singles), self.batch_size):
            chunk = singles[start : start + self.batch_size]
            for index, result in zip(
                chunk, self._score_full([pairs[i] for i in chunk]), strict=True
            ):
                results[index] = result
        for context, indices in by_context.items():
            if len(indices) > 1:
                shared = self._score_shared_context(list(context), [pairs[i][1] for i in indices])
                for index, result in zip(indices, shared, strict=True):
                    results[index] = result
        return [
            replace(result, truncated=True) if cut else result
            for result, ((_, cut), _) in zip(all_results(results), fitted, strict=True)
        ]

    def _decoder(self) -> Any:
        from evalharness.kernels.causal_lm import decoder_of

        return decoder_of(self.model)

    def _token_stats(self, hidden: Any, targets: Any) -> Any:
        """Target log-probs from last hidden states through the LM head, without full logits.

        The hidden states go to the head's device: under a device map the decoder ends on the
        last GPU, while the head (tied to the embeddings, or placed apart) may be on another.
        """
        import torch

        from evalharness.kernels.causal_lm import LMHead

        head = LMHead.of(self.model)
        hidden = hidden.to(head.weight.device)
        return head.stats(hidden, torch.as_tensor(targets, device=hidden.device))

    def _score_full(self, pairs: list[tuple[list[int], list[int]]]) -> list[ScoreResult]:
        """Right-padded batch of whole sequences; logits only at continuation positions.

        The last continuation token is never an input (nothing after it is scored), so a pair
        that fits the context by lm-eval's count (limit + 1 tokens) is never one position over.
        """
        import torch

        sequences = [c + t[:-1] for c, t in pairs]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        with torch.inference_mode():
            hidden = self._decoder()(
                input_ids=self._on_device(input_ids), attention_mask=self._on_device(attention)
            ).last_hidden_state
            rows, positions, targets = [], [], []
            for row, (context, continuation) in enumerate(pairs):
                for offset, token in enumerate(continuation):
                    rows.append(row)
                    positions.append(len(context) + offset - 1)
                    targets.append(token)
            stats = self._token_stats(hidden[rows, positions], targets)
        return self._collect(pairs, stats.logprobs, stats.is_argmax)

    def _score_shared_context(
        self, context: list[int], continuations: list[list[int]]
    ) -> list[ScoreResult]:
        """One forward pass over a shared context, then each continuation on its KV cache."""
        import torch
        from transformers import DynamicCache

        results = []
        with torch.inference_mode():
            cache = DynamicCache()
            out = self._decoder()(
                input_ids=self._on_device(torch.tensor([context])),
                past_key_values=cache,
                use_cache=True,
            )
            last_hidden = out.last_hidden_state[0, -1:]
            for continuation in continuations:
                hidden = last_hidden
                if len(continuation) > 1:
                    step = self._decoder()(
                        input_ids=self._on_device(torch.tensor([continuation[:-1]])),
                        past_key_values=cache,
                        use_cache=True,
                    )
                    hidden = torch.cat([last_hidden, step.last_hidden_state[0]], dim=0)
                    cache.crop(-(len(continuation) - 1))  # back to the shared context
                stats = self._token_stats(hidden, continuation)
                results.append(
                    ScoreResult(
                        logprob=float(stats.logprobs.sum()),
                        n_tokens=len(continuation),
                        is_greedy=bool(stats.is_argmax.all()),
                    )
                )
        return results

    @staticmethod
    def _collect(
        pairs: list[tuple[list[int], list[int]]], logprobs: Any, greedy: Any
    ) -> list[ScoreResult]:
        results, cursor = [], 0
        for _, continuation in pairs:
            n = len(continuation)
            results.append(
                ScoreResult(
                    logprob=float(logprobs[cursor : cursor + n].sum()),
                    n_tokens=n,
                    is_greedy=bool(greedy[cursor : cursor + n].all()),
                )
            )
            cursor += n
        return results
