"""Training as the command line and the CI pipeline run it: the method checked, then trained.

`evalharness train` and `evalharness pipeline` both check a config's method and its
hyperparameters before anything heavy loads (so a typo fails in a blink, naming its line), then
hand it to the offline loop (`trainers.loop`) or, for methods that sample their own data
(`prompt` data), the online one (`trainers.online`). The listing behind `evalharness methods`
lives here too: it reads the same loss registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from evalharness.errors import InputError

if TYPE_CHECKING:
    from evalharness.trainers.config import TrainConfig
    from evalharness.trainers.loop import TrainSummary


def check_method(config: Any, locate: Callable[..., str], section: str = "") -> Any:
    """The config's training method, its hyperparameters checked; errors name where they are."""
    from evalharness.trainers import losses
    from evalharness.trainers.losses import hyperparameters

    try:
        method = losses.method(config.method)
    except InputError as exc:
        raise InputError(f"{locate('method')}: field '{section}method': {exc}") from None
    try:
        hyperparameters(method, config.loss_args)
    except InputError as exc:
        raise InputError(f"{locate('loss_args')}: field '{section}loss_args': {exc}") from None
    return method


#: The loop of each online method, `module:function` under `evalharness.trainers`: each takes
#: `(config, *, progress)` and returns a `TrainSummary`. Offline methods all share `loop.train`.
ONLINE_LOOPS = {
    "grpo": "online:train_online",
    "rloo": "online:train_online",
    "ppo": "ppo:train_ppo",
    "online_dpo": "online_pairs_loop:train_online_pairs",
    "xpo": "online_pairs_loop:train_online_pairs",
    "nash_md": "online_pairs_loop:train_online_pairs",
    "gkd": "gkd:train_gkd",
}


def run_training(method: Any, config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """Train `config` with the loop `method` needs: its online loop, else the offline one."""
    import importlib

    if method.name in ONLINE_LOOPS:
        module, _, function = ONLINE_LOOPS[method.name].partition(":")
        train = getattr(importlib.import_module(f"evalharness.trainers.{module}"), function)
    else:
        from evalharness.trainers.loop import train
    return train(config, progress=progress)


def training_report(method: Any, summary: TrainSummary) -> dict[str, Any]:
    """What `evalharness train` prints (`--json`): the checkpoint, its cost and its evaluation."""
    return {
        "out": str(summary.out),
        "method": method.name,
        "steps": summary.steps,
        "examples": summary.examples,
        "seconds": round(summary.seconds, 2),
        "final": summary.final,
        "eval_before": summary.eval_before,
        "eval_after": summary.eval_after,
    }


def method_rows() -> list[dict[str, Any]]:
    """One row per method: each training method's data format, reference need, options and
    summary (`tuning_free` false; `kind` online when it samples its own data, else offline),
    then the tuning-free ones, which are model specs (`tuning_free` true, with their `spec`
    and `kind`, decoding-time or in-context; `evalharness.backends.tuning_free`)."""
    from evalharness.backends.tuning_free import tuning_free_rows
    from evalharness.trainers import losses

    trained = [
        {
            "name": m.name,
            "kind": "online" if m.name in ONLINE_LOOPS else "offline",
            "data": m.data_format,
            "reference": m.needs_reference,
            "hyperparameters": {**m.hyperparameters, **m.input_options},
            "summary": m.summary,
            "tuning_free": False,
        }
        for m in losses.methods()
    ]
    tuning_free = [
        {"name": row["name"], "data": None, "reference": False, **row, "tuning_free": True}
        for row in tuning_free_rows()
    ]
    return trained + tuning_free


def option_meanings(row: dict[str, Any]) -> dict[str, str]:
    """What each documented option of a method's row means."""
    from evalharness.trainers import losses

    if row.get("tuning_free"):
        return dict(row["options"])
    return {
        name: losses.OPTIONS[name].meaning
        for name in row["hyperparameters"]
        if name in losses.OPTIONS
    }


def option_defaults(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each documented option's default as shown: one value, or `method: value` where the
    methods that take it differ (cpo_alpha is 1.0 for cpo, 0.0 for simpo)."""
    from evalharness.trainers import losses

    shown: dict[str, str] = {}
    for name in sorted(losses.OPTIONS):
        by_method = {
            row["name"]: row["hyperparameters"][name]
            for row in rows
            if name in row["hyperparameters"] and not row.get("tuning_free")
        }
        if not by_method:
            continue
        values = {repr(value) for value in by_method.values()}
        if len(values) == 1:
            shown[name] = f"default {_shown_default(next(iter(by_method.values())))}"
        else:
            shown[name] = ", ".join(f"{m}: {_shown_default(v)}" for m, v in by_method.items())
    return shown


def _shown_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
