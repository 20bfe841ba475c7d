"""`evalharness pipeline CONFIG.yaml`: train → evaluate tuned and base → gate with `compare`.

The CI use: every fine-tune is trained, both the result and its starting point are evaluated on
the same tasks with the same judge (cached runs are reused), and the two runs are compared sample
by sample (`evalharness compare`). The command exits 1 when a gated metric of the tuned model is
worse than the base's by more than its `max_drop` and the paired test says so at level `alpha`
(a metric without a paired test, such as a fitted length-controlled win rate, is judged on its
delta alone). Directions come from the task: a drop in `over_refusal` is an improvement.
Every gate fails, uncompared, when either evaluation is not `complete` (a `partial` run left
items unjudged); a config without `gate:` entries is an error before training starts.
A `rounds:` section makes it a self-rewarding loop instead (`engine.self_rewarding`).

```yaml
train: {method: dpo, model: hf:base, data: prefs.jsonl, out: runs/dpo, max_steps: 50}
evaluate: {tasks: [driftcaps, mt_bench], limit: 16, task_args: {driftcaps.data: builtin}}
gate:
  - {metric: driftcaps.unsafe_refusal_rate, max_drop: 0.05}
  - {metric: driftcaps.over_refusal, max_drop: 0.05, alpha: 0.1}
  - {metric: mt_bench.score, max_drop: 0.2}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalharness.engine.pipeline_steps import (
    check_evaluate,
    check_gates,
    evaluate,
    evaluation_problem,
    failed_gates,
    parse_gates,
)
from evalharness.errors import InputError
from evalharness.formats.records import YamlLines, read_yaml_lines
from evalharness.store.paths import default_store_path


def read_pipeline(path: Path) -> tuple[dict[str, Any], YamlLines]:
    config, lines = read_yaml_lines(path, "config")
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping with train, evaluate and gate")
    unknown = sorted(set(config) - {"train", "evaluate", "gate", "rounds"}, key=str)
    if unknown:
        raise InputError(f"{lines.where(unknown[0])}: unknown section(s) {', '.join(unknown)}")
    for section in ("train", "evaluate"):
        if not isinstance(config.get(section), dict):
            raise InputError(
                f"{lines.where(section)}: section '{section}' is missing or not a mapping"
            )
    return config, lines


def run_pipeline(path: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate both models, check the gates; returns a report (`passed` says it all).
    A config with `rounds:` runs its rounds instead (`engine.self_rewarding`'s report)."""
    from evalharness.engine.training import check_method, run_training
    from evalharness.trainers.config import TrainConfig

    config, lines = read_pipeline(path)
    if "rounds" in config:
        from evalharness.engine.self_rewarding import Rounds

        return Rounds(path, config, lines, progress).run()
    gates = parse_gates(path, config.get("gate"), lines)

    def locate(*keys: str) -> str:
        return lines.where("train", *keys)

    train_config = TrainConfig.from_mapping(
        config["train"], str(path), locate=locate, section="train."
    )
    check_evaluate(path, config["evaluate"], lines)  # all checked before the (long) training
    method = check_method(train_config, locate, "train.")
    summary = run_training(method, train_config, progress=progress)
    tuned_spec = f"hf:{Path(train_config.out).resolve()}"
    base = evaluate(train_config.model, config["evaluate"], str(path))
    tuned = evaluate(tuned_spec, config["evaluate"], str(path))
    store_path = Path(config["evaluate"].get("store") or default_store_path())
    problems = [evaluation_problem("base", base), evaluation_problem("tuned", tuned)]
    if any(problems):
        checks = failed_gates(gates, "not compared: " + "; ".join(p for p in problems if p))
    else:
        checks = check_gates(store_path, base["run_id"], tuned["run_id"], gates)
    return {
        "trained": {"out": str(summary.out), "steps": summary.steps, **summary.eval_after},
        "base_run": base["run_id"],
        "tuned_run": tuned["run_id"],
        "gates": checks,
        "warnings": [
            f"{role} run {result['run_id']}: {warning}"
            for role, result in (("base", base), ("tuned", tuned))
            for warning in result.get("warnings", [])
        ],
        "passed": all(c["passed"] for c in checks),
    }
