"""The steps both kinds of pipeline share: check and run the `evaluate:` section, read the
`gate:` entries, and gate one stored run against another (`compare`).

`engine.pipeline` runs them once (base against tuned); `engine.self_rewarding` once per round
(against the previous round and the base). They live apart from both flows so that
`engine.pipeline` can hand a `rounds:` config to `engine.self_rewarding` without either module
importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalharness.errors import InputError
from evalharness.formats.records import YamlLines
from evalharness.store.paths import default_store_path


@dataclass(frozen=True)
class Gate:
    task: str
    metric: str
    max_drop: float
    alpha: float = 0.05

    @property
    def name(self) -> str:
        return f"{self.task}.{self.metric}"


#: `evaluate:` keys and the types they must have (checked before training starts).

EVALUATE_KEYS: dict[str, tuple[type, ...]] = {
    "tasks": (list,),
    "task_args": (dict,),
    "judge": (str,),
    "judge_mode": (str,),
    "judge_base_url": (str,),
    "judge_api_key_env": (str,),
    "max_judge_calls": (int,),
    "limit": (int,),
    "seed": (int,),
    "dtype": (str,),
    "device": (str,),
    "device_map": (str,),
    "store": (str,),
}


def check_evaluate(path: Path, evaluate_config: dict[str, Any], lines: YamlLines) -> None:
    """The evaluate section's keys, types and store, checked before the (long) training."""
    from evalharness.store.run_store import check_store_file

    for key, value in evaluate_config.items():
        kinds = EVALUATE_KEYS.get(str(key))
        if kinds is None:
            raise InputError(
                f"{lines.where('evaluate', key)}: unknown key evaluate.{key}; "
                f"known: {', '.join(EVALUATE_KEYS)}"
            )
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise InputError(
                f"{lines.where('evaluate', key)}: field 'evaluate.{key}' must be "
                f"{' or '.join('a ' + k.__name__ for k in kinds)}, not {value!r}"
            )
    from evalharness.engine.api import check_run_bounds

    check_run_bounds(
        evaluate_config, name=lambda key: f"{lines.where('evaluate', key)}: field 'evaluate.{key}'"
    )
    tasks = evaluate_config.get("tasks")
    if not tasks:
        raise InputError(f"{lines.where('evaluate')}: evaluate.tasks must be a non-empty list")
    check_evaluate_placement(evaluate_config, lines)
    store = evaluate_config.get("store")
    store_path = Path(store) if store else default_store_path()
    check_store_file(store_path, f"{lines.where('evaluate', 'store')}: store {store_path}")


def check_evaluate_placement(evaluate_config: dict[str, Any], lines: YamlLines) -> None:
    """`evaluate.device` / `evaluate.device_map` are spelt right, go together, and the device
    exists here: checked before training, so a GPU-less machine fails now, not after it."""
    from evalharness.backends.devices import parse_device_map, resolve_device

    device, device_map = evaluate_config.get("device"), evaluate_config.get("device_map")
    if device is not None:
        resolve_device(device, option=f"{lines.where('evaluate', 'device')}: evaluate.device")
    if device_map is None:
        return
    where = lines.where("evaluate", "device_map")
    try:
        parse_device_map(device_map)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    if device not in (None, "auto"):
        raise InputError(
            f"{where}: evaluate.device_map places the model over every visible GPU; leave "
            f"evaluate.device ({device}) out"
        )


def parse_gates(path: Path, entries: Any, lines: YamlLines | None = None) -> list[Gate]:
    """The `gate:` entries; none at all is an error, since a gate of nothing passes anything."""
    where = lines.where("gate") if lines else str(path)
    if entries is None or entries == []:
        raise InputError(
            f"{where}: no gates: list at least one {{metric: TASK.METRIC, max_drop: N}} under "
            "'gate:' (without one the pipeline would pass whatever the fine-tune did)"
        )
    if not isinstance(entries, list):
        raise InputError(f"{where}: 'gate' must be a list of {{metric, max_drop}} entries")
    gates = []
    for number, entry in enumerate(entries, start=1):
        where = f"{lines.where('gate', number - 1) if lines else path}: gate #{number}"
        if not isinstance(entry, dict) or "metric" not in entry:
            raise InputError(f"{where}: needs 'metric: TASK.METRIC'")
        unknown = sorted(set(entry) - {"metric", "max_drop", "alpha"})
        if unknown:
            raise InputError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: metric, max_drop, alpha"
            )
        task, sep, metric = str(entry["metric"]).partition(".")
        if not sep or not metric:
            raise InputError(f"{where}: metric {entry['metric']!r} is not TASK.METRIC")
        try:
            max_drop = float(entry.get("max_drop", 0.0))
            alpha = float(entry.get("alpha", 0.05))
        except (TypeError, ValueError):
            raise InputError(f"{where}: max_drop and alpha must be numbers") from None
        if not 0.0 < alpha < 1.0:
            raise InputError(f"{where}: alpha must be between 0 and 1, not {alpha}")
        gates.append(Gate(task, metric, max_drop, alpha))
    return gates


def evaluate(model: str, evaluate_config: dict[str, Any], where: str) -> dict[str, Any]:
    """One `evalharness run` in process (`evalharness.evaluate`); returns its JSON result.

    An `openai:` judge's key comes from the variable `judge_api_key_env` names, never from the
    YAML itself (a key in a committed CI file would leak).
    """
    from evalharness.backends.spec import parse_model_spec
    from evalharness.engine.api import evaluate as evaluate_run

    tasks = evaluate_config.get("tasks")
    if not tasks or not isinstance(tasks, list):
        raise InputError(f"{where}: evaluate.tasks must be a non-empty list")
    task_options: dict[str, dict[str, str]] = {}
    for key, value in (evaluate_config.get("task_args") or {}).items():
        task, sep, option = str(key).partition(".")
        if not sep:
            raise InputError(f"{where}: task_args key {key!r} is not TASK.OPTION")
        task_options.setdefault(task, {})[option] = str(value)
    results = evaluate_run(
        parse_model_spec(
            model,
            dtype=str(evaluate_config.get("dtype") or "auto"),
            device=evaluate_config.get("device"),
            device_map=evaluate_config.get("device_map"),
        ),
        [str(t) for t in tasks],
        task_options=task_options,
        judge=evaluate_config.get("judge"),
        judge_mode=evaluate_config.get("judge_mode") or "auto",
        judge_base_url=evaluate_config.get("judge_base_url"),
        judge_api_key_env=evaluate_config.get("judge_api_key_env"),
        max_judge_calls=evaluate_config.get("max_judge_calls"),
        limit=evaluate_config.get("limit"),
        seed=int(evaluate_config.get("seed", 0)),
        store=evaluate_config.get("store") or default_store_path(),
    )
    return results.raw


def evaluation_problem(role: str, result: dict[str, Any]) -> str | None:
    """Why an evaluation cannot be gated on (None when it is complete).

    A partial run's metrics leave out the items its judge could not judge, so comparing it
    would gate on other samples than the other run's, or on none: the gate fails instead.
    """
    if result["status"] == "complete":
        return None
    reason = f"{role} run {result['run_id']} is {result['status']}"
    judging = result.get("judging") or {}
    unjudged = judging.get("unjudged") or {}
    failed, over = unjudged.get("request_failed", 0), unjudged.get("over_budget", 0)
    if failed or over:
        reason += (
            f" ({failed + over} of {judging.get('items', '?')} judge items unjudged: "
            f"{failed} failed requests, {over} over budget)"
        )
    return reason


def failed_gates(gates: list[Gate], reason: str) -> list[dict]:
    """Every gate failed, unchecked, with `reason` (the rows `check_gates` returns)."""
    return [
        {
            "metric": gate.name,
            "base": None,
            "tuned": None,
            "worse_by": None,
            "max_drop": gate.max_drop,
            "p_value": None,
            "test": None,
            "alpha": gate.alpha,
            "passed": False,
            "reason": reason,
        }
        for gate in gates
    ]


def check_gates(store_path: Path, base_run: str, tuned_run: str, gates: list[Gate]) -> list[dict]:
    """Compare the tuned run against the base (`compare`) and judge every gate on it."""
    from evalharness.stats.comparison import compare_runs
    from evalharness.store.run_store import RunStore

    if not gates:
        return []
    store = RunStore(store_path)
    try:
        comparison = compare_runs(store, base_run, tuned_run, metrics=[g.name for g in gates])
    finally:
        store.close()
    checks = []
    for gate in gates:
        task = comparison.tasks[gate.task]
        row = next((m for m in task.metrics if m.metric == gate.metric), None)
        if row is None or row.worse_by is None:
            names = ", ".join(sorted(m.metric for m in task.metrics))
            raise InputError(f"gate {gate.name}: no such metric in both runs (there are: {names})")
        significant = None if row.p_value is None else row.p_value < gate.alpha
        checks.append(
            {
                "metric": gate.name,
                "base": row.a,
                "tuned": row.b,
                "worse_by": row.worse_by,
                "max_drop": gate.max_drop,
                "p_value": row.p_value,
                "test": row.test,
                "alpha": gate.alpha,
                "passed": not (row.worse_by > gate.max_drop and significant is not False),
                "reason": None,
            }
        )
    return checks
