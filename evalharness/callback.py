"""`EvalCallback`: evalharness tasks inside a `transformers.Trainer` (or any TRL trainer).

Every `every_n_steps` optimizer steps the live model is evaluated in memory (no checkpoint is
written) by `evalharness.evaluate`, and the task metrics go to the trainer's own loggers
(`trainer.log`: the console, TensorBoard, W&B, ... whatever `report_to` names). Each evaluation
is also a stored run, so `evalharness show/compare/report` work on it afterwards. Under DDP only
the main process evaluates, as the trainer's own logging does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from evalharness.api import Results, evaluate
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
        results = evaluate(
            _unwrapped(model),
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
            self.trainer.log(logs)
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


def _unwrapped(model: Any) -> Any:
    """The model itself, not a DDP/compile wrapper (its state dict names the real weights)."""
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)
