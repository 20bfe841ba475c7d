"""The Python API: `evaluate`, `compare` and their results, for notebooks and training loops.

These are the functions the CLI's `run` and `compare` call, so a run started here has the same
id, reuses the same cache and lands in the same store as the same command line would. `model`
may be a spec string (`hf:PATH`, `openai:NAME`, ...) or a `transformers` model in memory (with
its tokenizer): that one is evaluated as it is, without writing a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalharness.backends.devices import parse_device
from evalharness.backends.spec import ModelSpec, parse_model_spec, placed
from evalharness.errors import InputError
from evalharness.judges.llm import DEFAULT_MAX_NEW_TOKENS, DEFAULT_RETRIES

if TYPE_CHECKING:
    import pandas as pd

    from evalharness.backends.base import Backend
    from evalharness.engine.progress import Progress
    from evalharness.stats.comparison import Comparison

#: The offline default suite (`evalharness run` without `--tasks`): every task on its authored
#: data, sized to run in minutes on a laptop CPU with the built-in model.
DEFAULT_TASK_OPTIONS: dict[str, dict[str, str]] = {
    "mt_bench": {"data": "builtin", "max_new_tokens": "256"},
    "alpaca_eval": {"data": "builtin", "max_new_tokens": "256"},
    "driftcaps": {"data": "builtin", "max_new_tokens": "128"},
    "liconbench": {"dataset": "synthetic", "rounds": "1,2", "test_per_label": "1"},
    "truematch": {"bags": "2"},
}


#: Options that bound a run's work, and the smallest value each takes. `limit` 0 would store an
#: empty run and a negative one would drop samples from the end (Python slicing), so both are
#: errors: leave `limit` out to use every sample. `max_judge_calls` 0 generates and stores the
#: answers and judges nothing (a later run with a budget judges them).
RUN_BOUNDS: dict[str, tuple[int, str]] = {
    "limit": (1, "leave it out to use every sample"),
    "max_judge_calls": (0, "0 judges nothing; leave it out for no budget"),
    "judge_retries": (0, "0 never asks again"),
}


def check_run_bounds(values: Mapping[str, Any], name: Callable[[str], str] = str) -> None:
    """One-line errors for a bound out of range (`RUN_BOUNDS`); `name` spells an option as
    the caller's user wrote it (`--limit`, `limit`, `config.yaml:4: field 'evaluate.limit'`)."""
    for key, (least, hint) in RUN_BOUNDS.items():
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name(key)} must be a whole number, not {value!r}")
        if value < least:
            raise InputError(f"{name(key)} must be at least {least}, not {value} ({hint})")


@dataclass
class Results:
    """One stored run: what `evalharness run --json` prints, plus frames for analysis.

    `metrics[task][metric]` and `ci[task][metric]` are the task's aggregates; `raw` is the whole
    JSON record (calls made, judging counts, warnings).
    """

    run_id: str
    status: str
    store_path: Path
    raw: dict[str, Any] = field(repr=False)

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return {name: entry.get("metrics", {}) for name, entry in self.raw["tasks"].items()}

    @property
    def ci(self) -> dict[str, dict[str, list[float]]]:
        return {name: entry.get("ci", {}) for name, entry in self.raw["tasks"].items()}

    @property
    def ci_method(self) -> dict[str, dict[str, str]]:
        """How each interval in `ci` was made: a name in `evalharness.stats.intervals.CI_METHODS`
        (absent for runs stored before it was recorded)."""
        return {name: entry.get("ci_method", {}) for name, entry in self.raw["tasks"].items()}

    @property
    def warnings(self) -> list[str]:
        return list(self.raw.get("warnings", []))

    def to_pandas(self) -> ResultFrames:
        """Per-metric rows (task, metric, value, ci_low, ci_high, ci_method) and per-sample rows
        (task, sample_id, then each scored field flattened with `.`), read back from the store."""
        import pandas as pd

        from evalharness.store.run_store import open_store

        metric_rows = []
        for task, entry in self.raw["tasks"].items():
            intervals = entry.get("ci", {})
            methods = entry.get("ci_method", {})
            for metric, value in entry.get("metrics", {}).items():
                low, high = intervals.get(metric, (None, None))
                metric_rows.append(
                    {
                        "task": task,
                        "metric": metric,
                        "value": value,
                        "ci_low": low,
                        "ci_high": high,
                        "ci_method": methods.get(metric) if low is not None else None,
                    }
                )
        sample_rows = []
        store = open_store(str(self.store_path), read_only=True)
        try:
            for task in self.raw["tasks"]:
                for sample in store.get_samples(self.run_id, task):
                    row = {"task": task, "sample_id": sample["sample_id"]}
                    row.update(pd.json_normalize(sample["scores"] or {}).iloc[0].to_dict())
                    sample_rows.append(row)
        finally:
            store.close()
        return ResultFrames(pd.DataFrame(metric_rows), pd.DataFrame(sample_rows))


@dataclass(frozen=True)
class ResultFrames:
    """`Results.to_pandas()`: one row per metric, and one row per scored sample."""

    metrics: pd.DataFrame
    samples: pd.DataFrame


def evaluate(
    model: str | ModelSpec | Any,
    tasks: Sequence[str] | str | None = None,
    *,
    judge: str | None = None,
    limit: int | None = None,
    store: str | Path | None = None,
    task_options: Mapping[str, Mapping[str, str]] | None = None,
    tokenizer: Any = None,
    name: str | None = None,
    seed: int = 0,
    judge_mode: str = "auto",
    judge_base_url: str | None = None,
    judge_api_key_env: str | None = None,
    judge_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    judge_concurrency: int | None = None,
    judge_timeout_s: float | None = None,
    judge_http_retries: int | None = None,
    judge_retries: int = DEFAULT_RETRIES,
    max_judge_calls: int | None = None,
    progress: bool | Progress = False,
    notify: Callable[[str], None] | None = None,
    runner_options: Mapping[str, Any] | None = None,
    device: str | None = None,
    device_map: str | None = None,
    judge_device: str | None = None,
) -> Results:
    """Run `tasks` on `model` (judged by `judge`, default each task's own) and store the run.

    `model`: a spec string or `ModelSpec`, or a `transformers` causal LM in memory with its
    `tokenizer` (`name` labels it in the store). `tasks`: names or folders, a comma list, or
    None for the offline default suite. `store`: the SQLite run store (default
    `$EVALHARNESS_STORE` or the CLI's default). A rerun with the same arguments makes no model
    or judge calls. An interrupted run resumes on the next call. `progress`: True for a
    progress bar, or the engine's progress callable; `notify` receives one-line notices;
    `runner_options` (a prebuilt `use_backend` or `use_judge`) go to the engine's `Runner`.
    `device` (auto: the first accelerator, else cpu; cpu, cuda, cuda:N, mps) and `device_map`
    (`auto`: over every visible GPU) place a model named by a spec, `judge_device` a judge that
    is a local model (default: `device`); a model in memory runs where it is.
    """
    from evalharness.engine.progress import no_progress
    from evalharness.engine.run_types import RunSpec
    from evalharness.engine.runner import Runner
    from evalharness.store.run_store import open_store

    bounds = {"limit": limit, "max_judge_calls": max_judge_calls, "judge_retries": judge_retries}
    check_run_bounds(bounds)
    names, options = _tasks_and_options(tasks, task_options)
    spec_model, backend = _model(model, tokenizer, name, device, device_map)
    spec = RunSpec(
        model=spec_model,
        tasks=names,
        task_options=options,
        judge=judge,
        judge_mode=judge_mode,
        judge_base_url=judge_base_url,
        judge_api_key_env=judge_api_key_env,
        judge_max_new_tokens=judge_max_new_tokens,
        judge_concurrency=judge_concurrency,
        judge_timeout_s=judge_timeout_s,
        judge_http_retries=judge_http_retries,
        judge_retries=judge_retries,
        max_judge_calls=max_judge_calls,
        limit=limit,
        seed=seed,
        judge_device=parse_device(judge_device, option="--judge-device") if judge_device else None,
    )
    if backend is None:
        check_devices(spec_model, judge_device)
    options = dict(runner_options or {})
    if backend is not None:
        options["use_backend"] = backend
    run_store = open_store(str(store) if store is not None else None)
    if progress is True:
        from evalharness.console import rich_progress

        report: Progress = rich_progress
    else:
        report = progress or no_progress
    # A model handed over by a training loop is in train mode (dropout on): answer in eval
    # mode, as a loaded checkpoint does, and give it back as it came.
    training = bool(getattr(model, "training", False)) and backend is not None
    if training:
        model.eval()
    try:
        runner = Runner(run_store, progress=report, notify=notify or (lambda _: None), **options)
        outcome = runner.run(spec)
    finally:
        run_store.close()
        if training:
            model.train()
    raw = outcome.to_json()
    return Results(raw["run_id"], raw["status"], Path(run_store.path), raw)


def compare(
    a: str | Results,
    b: str | Results,
    *,
    store: str | Path | None = None,
    alpha: float = 0.05,
    fail_if_worse: float | None = None,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare run B against baseline run A (`evalharness compare A B`): paired deltas, tests,
    CIs and the gate (`Comparison.passed`). Runs are ids or `Results`; with `Results` the
    store is theirs unless `store` is given. `seed` is ignored, kept for earlier callers:
    nothing in a comparison is random (its CIs are t and Newcombe intervals, not bootstraps)."""
    from evalharness.stats.comparison import compare_runs
    from evalharness.store.run_store import open_store

    if store is None:
        store = next((r.store_path for r in (a, b) if isinstance(r, Results)), None)
    run_a = a.run_id if isinstance(a, Results) else a
    run_b = b.run_id if isinstance(b, Results) else b
    run_store = open_store(str(store) if store is not None else None, read_only=True)
    try:
        return compare_runs(
            run_store,
            run_a,
            run_b,
            alpha=alpha,
            fail_if_worse=fail_if_worse,
            metrics=metrics,
        )
    finally:
        run_store.close()


#: Backends that hold weights in this process: their `--device` must exist on this machine.
LOCAL_BACKENDS = ("hf", "builtin", "rm", "clf", "vllm", "bon", "urial", "args", "deal")


def check_devices(model: ModelSpec, judge_device: str | None) -> None:
    """A device this machine lacks is a one-line error before the store is even opened (the
    backends resolve it again when built, also before any run is created)."""
    from evalharness.backends.devices import resolve_device_name

    if model.backend in LOCAL_BACKENDS:
        resolve_device_name(model.device)
    if judge_device is not None:
        resolve_device_name(judge_device, option="--judge-device")


def _tasks_and_options(
    tasks: Sequence[str] | str | None, task_options: Mapping[str, Mapping[str, str]] | None
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Task names and their options: the default suite gets its offline options under the
    caller's; an option for a task not asked for is an error (a typo would otherwise be lost)."""
    options = {task: dict(values) for task, values in (task_options or {}).items()}
    if tasks is None:
        names = list(DEFAULT_TASK_OPTIONS)
        for task, defaults in DEFAULT_TASK_OPTIONS.items():
            options[task] = {**defaults, **options.get(task, {})}
    else:
        parts = tasks.split(",") if isinstance(tasks, str) else list(tasks)
        names = [t.strip() for t in parts if t.strip()]
        if not names:
            raise InputError("tasks is empty")
    unknown = set(options) - set(names)
    if unknown:
        raise InputError(f"task options name task {sorted(unknown)[0]!r}, which is not in tasks")
    return names, options


def _model(
    model: Any,
    tokenizer: Any,
    name: str | None,
    device: str | None = None,
    device_map: str | None = None,
) -> tuple[ModelSpec, Backend | None]:
    if isinstance(model, ModelSpec):
        return placed(model, device, device_map), None
    if isinstance(model, str):
        return parse_model_spec(model, device=device, device_map=device_map), None
    if device is not None or device_map is not None:
        raise InputError(
            "a model in memory runs where it is: move it (model.to(...)) instead of passing "
            "device= or device_map="
        )
    if tokenizer is None:
        raise InputError("a model in memory needs its tokenizer: evaluate(model, tokenizer=...)")
    from evalharness.backends.in_memory import InMemoryHFBackend

    label = name or getattr(getattr(model, "config", None), "_name_or_path", "") or "model"
    backend = InMemoryHFBackend(model, tokenizer, name=str(label))
    return backend.spec, backend
