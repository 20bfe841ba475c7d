"""An lm-evaluation-harness task YAML run as an evalharness task, on lm-eval's own machinery.

lm-eval decides everything a YAML means: its `ConfigurableTask` loads the data, runs
`process_docs`, samples the few-shot examples (its sampler, seeded as `lm_eval` seeds it) and
builds every request (`build_all_requests`); its filter ensembles and `process_results` score
each document. This module only carries those requests through the engine, so they are
batched, cached per request in the store, resumable and reported like any task's:

- a `loglikelihood` instance (each choice of `multiple_choice`) is a `ScoreRequest` with the
  same context and continuation strings (the backend splits and scores them as lm-eval `hf`);
- a `generate_until` instance is a raw-text `CompleteRequest` (no chat template, as `lm_eval
  --model hf` without `--apply_chat_template`) with `until` as stop strings and the text kept
  verbatim for the filters.

Per-sample scores are lm-eval's, named as in its results without the `none` filter
(`acc`, `exact_match`; `exact_match:strict-match` under a named filter). Metrics lm-eval
aggregates by mean get intervals; others (`f1`, `bleu`, ...) get lm-eval's aggregate alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from evalharness.engine.requests import (
    CompleteRequest,
    GenerateResult,
    Request,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    canonical_json,
)
from evalharness.errors import InputError
from evalharness.stats.intervals import Intervals

from ..base import Sample, TaskData, TaskResult
from ..signatures import Responses, Verdicts
from .lm_eval_yaml import LmEvalSpec, check_spec, load_lm_eval_yaml, resolve_functions
from .task import DeclaredResults

OPTIONS = ("num_fewshot", "fewshot_seed")
#: `lm_eval.simple_evaluate`'s defaults: python's `random` and numpy's seeds while tasks are
#: built (a `process_docs` that shuffles sees the same state) and the few-shot sampler's seed.
LM_EVAL_RANDOM_SEED = 0
LM_EVAL_NUMPY_SEED = 1234
LM_EVAL_FEWSHOT_SEED = 1234
#: lm-eval `hf`'s `max_gen_toks` when the YAML's generation_kwargs give none.
LM_EVAL_MAX_GEN_TOKS = 256
INSTALL_HINT = "install it with: pip install 'evalharness[lm-eval]'"


def require_lm_eval(file: Path) -> None:
    try:
        import lm_eval.api.task  # noqa: F401
    except ImportError:
        raise InputError(f"{file}: an lm-eval task YAML needs lm-eval; {INSTALL_HINT}") from None


def metric_key(metric: str, filter_name: str) -> str:
    """lm-eval's `metric,filter` result key, without the default `none` filter; `:` instead of
    `,` because `compare --metrics` is a comma list."""
    return metric if filter_name == "none" else f"{metric}:{filter_name}"


def planned_metrics(spec: LmEvalSpec) -> tuple[str, ...]:
    """The metric keys a YAML declares (lm-eval's defaults for its output type when it has no
    metric_list), under each of its filters."""
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY

    config = spec.config
    entries = config.get("metric_list")
    if entries:
        names = [
            entry["metric"] if isinstance(entry["metric"], str) else entry["metric"].qualname
            for entry in entries
        ]
        names = [name.rpartition(".")[2] for name in names]
    else:
        names = list(DEFAULT_METRIC_REGISTRY[config.get("output_type", "generate_until")])
    filters = [entry["name"] for entry in config.get("filter_list") or []] or ["none"]
    return tuple(metric_key(name, f) for f in filters for name in names)


def jsonable(value: Any) -> Any:
    """lm-eval's values (numpy scalars, tuples) as JSON values, for the store."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@contextlib.contextmanager
def lm_eval_quietly() -> Iterator[None]:
    """lm-eval and `datasets` talk on stderr/stdout (progress bars, config warnings, prints);
    a run's own output (and `--json`) stays clean. Errors still propagate."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def lm_eval_seeds() -> Iterator[None]:
    """The global seeds `lm_eval.simple_evaluate` sets before it builds tasks, restored after."""
    state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(LM_EVAL_RANDOM_SEED)
    np.random.seed(LM_EVAL_NUMPY_SEED)
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(numpy_state)


def sampling_of(kwargs: Mapping[str, Any], repeat: int) -> SamplingParams:
    """lm-eval's `normalize_gen_kwargs`: greedy unless `do_sample` (or, when it is absent, a
    temperature above 0); the first of max_gen_toks, max_new_tokens, max_tokens,
    max_completion_tokens. A repeat of a sampled request gets its own seed."""
    tokens = next(
        (
            int(kwargs[key])
            for key in ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
            if kwargs.get(key) is not None
        ),
        LM_EVAL_MAX_GEN_TOKS,
    )
    temperature = float(kwargs.get("temperature", 0.0))
    do_sample = kwargs.get("do_sample")
    if do_sample is None:
        do_sample = temperature > 0.0
    if not do_sample:
        return SamplingParams(temperature=0.0, max_new_tokens=tokens)
    return SamplingParams(
        temperature=temperature if temperature > 0.0 else 1.0,  # transformers' default
        max_new_tokens=tokens,
        top_p=float(kwargs.get("top_p", 1.0)),
        seed=repeat,
    )


class LmEvalTask(DeclaredResults):
    """One lm-eval task YAML (subclasses carry its `lm_spec`; see `lm_eval_task_class`).

    Stored runs are read by `DeclarativeTask` (their settings say `declarative`), so reports
    and `compare` work without the YAML or lm-eval installed. Nothing is judged: the base
    `Task`'s empty judge plan applies.
    """

    name: ClassVar[str] = "lm_eval"
    description: ClassVar[str] = "an lm-eval task YAML"
    needs_judge: ClassVar[bool] = False
    lm_spec: ClassVar[LmEvalSpec | None] = None

    def __init__(self, options: Mapping[str, str] | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        if self.lm_spec is None:
            raise InputError("an lm-eval task needs its YAML (lm_eval_task_class)")
        self.check_options(OPTIONS)
        self.spec_lm: LmEvalSpec = self.lm_spec
        raw = self.options.get("num_fewshot")
        self.num_fewshot_override = None if raw is None else self.int_option("num_fewshot", 0)
        if self.num_fewshot_override is not None and self.num_fewshot_override < 0:
            raise InputError(f"{self.name}.num_fewshot must be 0 or more, not {raw!r}")
        self.fewshot_seed = self.int_option("fewshot_seed", LM_EVAL_FEWSHOT_SEED)
        self._task: Any = None
        self._instances: dict[str, list[Any]] = {}
        self._requests: dict[str, dict[str, Request]] = {}
        self._metric_keys: list[str] = []

    # -- data ------------------------------------------------------------------------------
    def load(self, limit: int | None = None) -> TaskData:
        spec = self.spec_lm
        config, helpers = resolve_functions(spec)
        for key in ("tag", "task_list"):  # lm-eval's TaskManager drops them before building
            config.pop(key, None)
        metadata = config.get("metadata") or {}
        config["metadata"] = {**metadata, "config_source": str(spec.file)}
        with lm_eval_quietly(), lm_eval_seeds():
            task = build_configurable_task(spec, config)
            configured = task.get_config("num_fewshot")
            # As `simple_evaluate`: a run-time num_fewshot replaces the YAML's, except a YAML
            # that pins 0; no value at all means zero-shot.
            if self.num_fewshot_override is not None and configured != 0:
                task.set_config(key="num_fewshot", value=self.num_fewshot_override)
            elif configured is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=self.fewshot_seed)
            try:
                task.build_all_requests(limit=limit)
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a template or helper failed on a doc
                raise InputError(
                    f"{spec.file}: lm-eval could not build the prompts ({type(exc).__name__}: "
                    f"{exc})"
                ) from None
        self._task = task
        groups: dict[int, list[Any]] = defaultdict(list)
        for instance in task.instances:
            groups[instance.doc_id].append(instance)
        digest = hashlib.sha256()
        for path in sorted(spec.texts):  # the YAMLs' text, not where they are
            digest.update(spec.texts[path].encode() + b"\n")
        for helper in helpers:
            digest.update(helper.read_bytes())
        samples = []
        for doc_id in sorted(groups):
            group = sorted(groups[doc_id], key=lambda instance: instance.idx)
            sample_id = str(doc_id)
            self._instances[sample_id] = group
            self._requests[sample_id] = self._requests_of(group)
            data = self._stored_data(task, doc_id, group)
            samples.append(Sample(id=sample_id, data=data))
            digest.update(canonical_json([sample_id, data]).encode())
            for slot, request in sorted(self._requests[sample_id].items()):
                digest.update(f"{slot}\n{canonical_json(request)}\n".encode())
        self._metric_keys = list(planned_metrics(spec))
        settings = {
            "declarative": True,
            "lm_eval": True,
            "lm_eval_version": _lm_eval_version(),
            "task_yaml": str(spec.file),
            "output_type": task.OUTPUT_TYPE,
            "num_fewshot": task.get_config("num_fewshot"),
            "fewshot_seed": self.fewshot_seed,
            "filters": [f.name for f in task._filters],
            "metrics": list(self._metric_keys),
        }
        return TaskData(
            samples=samples,
            data_hash=digest.hexdigest(),
            source=str(spec.file),
            settings=settings,
        )

    def _stored_data(self, task: Any, doc_id: int, group: list[Any]) -> dict[str, Any]:
        """What is stored per document: its prompt(s), answer fields and the doc itself."""
        doc = group[0].doc
        contexts = [instance.args[0] for instance in group]
        data: dict[str, Any] = {"doc_id": doc_id, "prompt": contexts[0]}
        if len(set(contexts)) > 1:
            data["contexts"] = contexts
        target = jsonable(task.doc_to_target(doc))
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = [str(c) for c in task.doc_to_choice(doc)]
            data["choices"] = choices
            data["continuations"] = [instance.args[1] for instance in group]
            gold = jsonable(task.doc_to_text(doc)) if task.multiple_input else target
            if isinstance(gold, str):
                gold = choices.index(gold) if gold in choices else None
            data["gold"] = gold
        elif task.OUTPUT_TYPE == "loglikelihood":
            data["continuations"] = [instance.args[1] for instance in group]
        else:
            data["generation_kwargs"] = jsonable(group[0].args[1])
        data["target"] = target if isinstance(target, str) else jsonable(target)
        data["doc"] = jsonable(doc)
        return data

    def _requests_of(self, group: list[Any]) -> dict[str, Request]:
        """Each lm-eval instance as the engine's request (repeats of a sampled generation get
        their own seeds; greedy repeats are one cached request)."""
        requests: dict[str, Request] = {}
        for instance in group:
            if instance.request_type == "loglikelihood":
                context, continuation = instance.args[:2]
                (slot,) = self._slots(instance)
                requests[slot] = ScoreRequest(context=context, continuation=continuation)
                continue
            context, kwargs = instance.args[:2]
            until = kwargs.get("until") or []
            stops = tuple(s for s in ([until] if isinstance(until, str) else until) if s)
            for repeat, slot in enumerate(self._slots(instance)):
                requests[slot] = CompleteRequest(
                    prompt=context, sampling=sampling_of(kwargs, repeat), stop=stops, verbatim=True
                )
        return requests

    def _slots(self, instance: Any) -> list[str]:
        """Where an instance's responses are kept: `choice_I` per choice (the names the stored
        multiple-choice view reads), one `output` per repeat of a generation."""
        if instance.request_type == "loglikelihood":
            multiple_choice = self._task.OUTPUT_TYPE == "multiple_choice"
            return [f"choice_{instance.idx}" if multiple_choice else "loglikelihood"]
        return ["output" if r == 0 else f"output_{r}" for r in range(instance.repeats or 1)]

    # -- model work ------------------------------------------------------------------------
    def requests(self, sample: Sample, responses: Responses) -> dict[str, Request]:
        return dict(self._requests[sample.id])

    # -- scores ----------------------------------------------------------------------------
    def score(self, sample: Sample, responses: Responses, verdicts: Verdicts) -> dict[str, Any]:
        """lm-eval's filters and `process_results` on this document's responses."""
        from lm_eval.api.instance import Instance

        task = self._task
        group = self._instances[sample.id]
        copies = []
        for instance in group:
            copy = Instance(
                request_type=instance.request_type,
                doc=instance.doc,
                arguments=instance.arguments,
                idx=instance.idx,
                metadata=(instance.task_name, instance.doc_id, instance.repeats),
            )
            copy.resps = self._resps(instance, responses)
            copies.append(copy)
        scores: dict[str, Any] = {}
        with lm_eval_quietly():
            for ensemble in task._filters:
                ensemble.apply(copies)
            for ensemble in task._filters:
                results = task.process_results(
                    group[0].doc, [copy.filtered_resps[ensemble.name] for copy in copies]
                )
                for metric, value in results.items():
                    key = metric_key(metric, ensemble.name)
                    scores[key] = jsonable(value)
                    if key not in self._metric_keys:
                        self._metric_keys.append(key)
        if task.OUTPUT_TYPE == "multiple_choice":
            n_choices = len(sample.data["choices"])
            logprobs = [copies[i].resps[0][0] for i in range(n_choices)]
            scores["pred"] = int(np.argmax(logprobs))
        elif task.OUTPUT_TYPE == "generate_until":
            scores["filtered"] = {
                ensemble.name: jsonable(copies[0].filtered_resps[ensemble.name])
                for ensemble in task._filters
            }
        return scores

    def _resps(self, instance: Any, responses: Responses) -> list[Any]:
        """The model's answers as lm-eval's `hf` gives them: (logprob, is_greedy) per
        loglikelihood request (the same for every repeat), the text of each generation."""
        if instance.request_type == "loglikelihood":
            (slot,) = self._slots(instance)
            result = responses[slot]
            assert isinstance(result, ScoreResult)
            return [(result.logprob, result.is_greedy)] * (instance.repeats or 1)
        texts = []
        for slot in self._slots(instance):
            result = responses[slot]
            assert isinstance(result, GenerateResult)
            texts.append(result.text)
        return texts

    def aggregate(self, samples: Sequence[Sample], scores: Sequence[dict[str, Any]]) -> TaskResult:
        """lm-eval's aggregation of each metric; an interval where it is a mean.

        A mean of 0/1 outcomes (acc, acc_norm, exact_match, ...) is a rate: it gets the Wilson
        interval, which keeps its coverage near 0 and 1, where a percentile bootstrap collapses
        to a point (all correct gives (1, 1)). Any other mean gets a bootstrap of the mean.
        """
        from lm_eval.api.metrics import mean as lm_eval_mean

        aggregations = self._task.aggregation()
        metrics: dict[str, Any] = {}
        intervals = Intervals(seed=self.seed)
        counts: dict[str, int] = {}
        for key in self._metric_keys:
            values = [s[key] for s in scores if s.get(key) is not None]
            counts[f"scored_{key}"] = len(values)
            if not values:
                continue
            aggregate = aggregations.get(key.partition(":")[0], lm_eval_mean)
            try:
                with lm_eval_quietly():
                    metrics[key] = float(aggregate(values))
            except Exception as exc:  # noqa: BLE001 - lm-eval's metric refused these values
                raise InputError(
                    f"{self.spec_lm.file}: lm-eval's aggregation of {key!r} failed "
                    f"({type(exc).__name__}: {exc}); the answers are stored, a re-run reuses them"
                ) from None
            if aggregate is lm_eval_mean:
                numbers = [float(v) for v in values]
                intervals.mean(key, numbers, rate=all(v in (0.0, 1.0) for v in numbers))
        return TaskResult(
            metrics=metrics, failures=0, ci=intervals.ci, counts=counts, ci_method=intervals.method
        )


def _lm_eval_version() -> str:
    import lm_eval

    return str(getattr(lm_eval, "__version__", "unknown"))


def build_configurable_task(spec: LmEvalSpec, config: dict[str, Any]) -> Any:
    """lm-eval's `ConfigurableTask` for a checked config; a dataset that cannot be loaded (no
    file, offline without a cached copy) or a config lm-eval refuses is one line."""
    from lm_eval.api.task import ConfigurableTask

    class Checked(ConfigurableTask):
        def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            try:
                super().download(dataset_kwargs, **kwargs)
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - offline, missing, auth: one line
                raise InputError(
                    f"{spec.where('dataset_path')}: field 'dataset_path': cannot load "
                    f"{config.get('dataset_path')!r} ({type(exc).__name__}: {exc}); a hub "
                    "dataset works offline once cached (HF_HUB_OFFLINE=1), or use dataset_path: "
                    "json with data_files"
                ) from None

    try:
        return Checked(config=config)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - lm-eval's own checks and the user's helpers
        raise InputError(
            f"{spec.file}: lm-eval could not build the task ({type(exc).__name__}: {exc})"
        ) from None


def lm_eval_task_class(path: Path) -> type[LmEvalTask]:
    """One `Task` class for one lm-eval task YAML: read and checked now (before any model is
    loaded); its data and `!function` helpers are loaded when the task loads."""
    require_lm_eval(path)
    spec = load_lm_eval_yaml(path)
    check_spec(spec)
    attributes = {
        "name": spec.name,
        "description": str(spec.config.get("task_alias") or f"lm-eval task {path}"),
        "needs_judge": False,
        "headline": planned_metrics(spec),
        "lm_spec": spec,
        "__doc__": f"The lm-eval task declared in {path}.",
    }
    class_name = "LmEval_" + "".join(c if c.isalnum() else "_" for c in spec.name)
    return type(class_name, (LmEvalTask,), attributes)
