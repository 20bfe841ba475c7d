"""`EvalCallback`: evalharness tasks inside a `transformers.Trainer` (or any TRL trainer).

Every `every_n_steps` optimizer steps the live model is evaluated in memory (no checkpoint is
written) by `evalharness.evaluate`, and the task metrics go to the trainer's own loggers
(`trainer.log`: the console, TensorBoard, W&B, ... whatever `report_to` names). Each evaluation
is also a stored run, so `evalharness show/compare/report` work on it afterwards. Under DDP only
the main process evaluates, as the trainer's own logging does. The model is evaluated on its own
device, and its weights are hashed there for the cache key
(`evalharness.store.weights_fingerprint`): no copy of the model comes to the host at each
evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from evalharness.engine.api import Results, evaluate
from evalharness.errors import InputError


class EvalCallback(TrainerCallback):
    """Evaluate `tasks` on the training model every `every_n_steps` steps and log the metrics.

    Logged names are `{prefix}/{task}/{metric}` for every numeric metric (all of them, or
    those listed in `metrics` as `task.metric`). `results` keeps `(step, Results)` pairs.
    Pass the trainer (as TRL's callbacks take it) so metrics reach its loggers; without one
    they are appended to `state.log_history` only.
    """

    def __init__(
        self,
        trainer: Any = None,
        *,
        tasks: Sequence[str] | str,
        every_n_steps: int,
        judge: str | None = None,
        limit: int | None = None,
        store: str | Path | None = None,
        task_options: Mapping[str, Mapping[str, str]] | None = None,
        metrics: Sequence[str] | None = None,
        tokenizer: Any = None,
        name: str | None = None,
        prefix: str = "evalharness",
    ) -> None:
        if every_n_steps < 1:
            raise InputError(f"every_n_steps must be at least 1, not {every_n_steps}")
        self.trainer = trainer
        self.tasks = tasks
        self.every_n_steps = every_n_steps
        self.judge = judge
        self.limit = limit
        self.store = store
        self.task_options = task_options
        self.metrics = set(metrics) if metrics is not None else None
        self.tokenizer = tokenizer
        self.name = name
        self.prefix = prefix
        self.results: list[tuple[int, Results]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = state.global_step
        if step % self.every_n_steps or not state.is_world_process_zero:
            return control
        model = kwargs.get("model")
        tokenizer = self.tokenizer or kwargs.get("processing_class") or kwargs.get("tokenizer")
        if model is None or tokenizer is None:
            raise InputError("EvalCallback needs the trainer's model and its tokenizer")
        model = _unwrapped(model)
        with _without_mixed_precision_wrapper(model):
            results = evaluate(
                model,
                self.tasks,
                tokenizer=getattr(tokenizer, "tokenizer", tokenizer),  # a processor's tokenizer
                name=self.name,
                judge=self.judge,
                limit=self.limit,
                store=self.store,
                task_options=self.task_options,
            )
        self.results.append((step, results))
        logs = self.flatten(results)
        if self.trainer is not None:
            _log_beside_the_trainer(self.trainer, logs, control)
        else:
            state.log_history.append({**logs, "step": step})
        return control

    def flatten(self, results: Results) -> dict[str, float]:
        """`{prefix}/{task}/{metric}: value` for the numeric metrics this callback logs."""
        logs = {}
        for task, values in results.metrics.items():
            for metric, value in values.items():
                wanted = self.metrics is None or f"{task}.{metric}" in self.metrics
                if wanted and isinstance(value, (int, float)) and not isinstance(value, bool):
                    logs[f"{self.prefix}/{task}/{metric}"] = float(value)
        return logs


def _log_beside_the_trainer(trainer: Any, logs: dict[str, float], control: Any) -> None:
    """Send `logs` to the trainer's loggers without touching its own loss log at this step.

    `on_step_end` runs after the trainer decided to log (`control.should_log`) but before it
    logs the loss; `CallbackHandler.on_log` clears that flag, so a plain `trainer.log` here
    dropped the step's loss log (and the next one averaged over both intervals). The flag is
    put back. The base `transformers.Trainer.log` is called, not an override: TRL's trainers
    fold their accumulated metrics (token accuracy, entropy, ...) into whatever is logged and
    clear them, which would move them from the loss log into this one.
    """
    from transformers import Trainer

    should_log = control.should_log
    log = Trainer.log if isinstance(trainer, Trainer) else type(trainer).log
    log(trainer, logs)
    control.should_log = should_log
    trainer.control.should_log = should_log


@contextmanager
def _without_mixed_precision_wrapper(model: Any) -> Iterator[None]:
    """Run the model's own `forward` for the evaluation, then give the trainer's back.

    Under `bf16`/`fp16` (TRL's default is bf16), accelerate replaces `model.forward` with an
    autocast wrapper and keeps the original as `_original_forward`. Evaluated through it, the
    live model answers differently from the same weights anywhere else, while the store caches
    those answers under a hash of the weights alone; the saved checkpoint must score the same.
    """
    original = model.__dict__.get("_original_forward")
    wrapped = model.__dict__.get("forward")
    if original is None or wrapped is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


def _unwrapped(model: Any) -> Any:
    """The model itself, not a DDP/compile wrapper (its state dict names the real weights)."""
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)
