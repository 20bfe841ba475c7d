"""`evalharness run`: evaluate a model (no arguments: the offline suite on the built-in model)

Without arguments: every task on its authored data with SmolLM2-135M; MT-Bench and AlpacaEval judged
by the model itself through its own probabilities (a pipeline demonstration, not a meaningful
judge), safety by refusal rules.
"""

# The flags become a model spec, task names and per-task options; `evalharness.evaluate` does the
# work. `execute` (the call and the printed summary) is shared with `import`, whose runs are the
# same kind of run made from outputs produced elsewhere.

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalharness.backends.spec import ModelSpec
from evalharness.cli.options import (
    add_judge_options,
    add_model_options,
    add_output_options,
    judge_settings,
    model_spec,
)
from evalharness.engine.api import DEFAULT_TASK_OPTIONS
from evalharness.errors import InputError

DEFAULT_TASKS = list(DEFAULT_TASK_OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness run`."""
    add_model_options(parser)
    parser.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated task names (default: the offline suite {','.join(DEFAULT_TASKS)})",
    )
    parser.add_argument(
        "--task-arg",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="task option, e.g. mt_bench.data=PATH (repeatable)",
    )
    add_judge_options(parser)
    parser.add_argument(
        "--mode", default=None, help="single or pairwise (tasks that compare with a baseline)"
    )
    parser.add_argument(
        "--baseline", default=None, help="pairwise baseline: a stored run id or a model spec"
    )
    parser.add_argument(
        "--num-fewshot",
        type=int,
        default=None,
        metavar="N",
        help="few-shot examples for lm-eval task YAMLs in --tasks (as lm_eval --num_fewshot)",
    )
    parser.add_argument("--limit", type=int, default=None, help="at most N samples per task")
    parser.add_argument("--seed", type=int, default=0)
    add_output_options(parser)


def parse_task_args(pairs: Sequence[str]) -> dict[str, dict[str, str]]:
    """`--task-arg TASK.KEY=VALUE` pairs, grouped by task."""
    options: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        task, dot, option = key.rpartition(".")  # a task may be a path: tasks/arc.yaml.KEY
        if not sep or not dot or not task or not option:
            raise InputError(f"--task-arg {pair!r}: expected TASK.KEY=VALUE")
        options.setdefault(task, {})[option] = value
    return options


def cmd_run(args: argparse.Namespace) -> int:
    task_options = parse_task_args(args.task_arg)
    if args.tasks is None:
        tasks = list(DEFAULT_TASKS)
        for task, defaults in DEFAULT_TASK_OPTIONS.items():
            task_options[task] = {**defaults, **task_options.get(task, {})}
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not tasks:
            raise InputError("--tasks is empty")
    unknown = set(task_options) - set(tasks)
    if unknown:
        raise InputError(f"--task-arg names task {sorted(unknown)[0]!r}, which is not in --tasks")
    for option in ("mode", "baseline"):
        value = getattr(args, option)
        if value is not None:
            for task in tasks:
                task_options.setdefault(task, {})[option] = value
    if args.num_fewshot is not None:
        set_num_fewshot(tasks, task_options, args.num_fewshot)
    return execute(args, model_spec(args), tasks, task_options, judge=args.judge)


def set_num_fewshot(tasks: list[str], task_options: dict[str, dict[str, str]], shots: int) -> None:
    """`--num-fewshot` is the `num_fewshot` option of every lm-eval task YAML in --tasks."""
    from evalharness.tasks.declarative.sources import is_lm_eval_source

    if shots < 0:
        raise InputError(f"--num-fewshot must be 0 or more, not {shots}")
    chosen = [task for task in tasks if is_lm_eval_source(Path(task).expanduser())]
    if not chosen:
        raise InputError("--num-fewshot applies to lm-eval task YAMLs, and --tasks names none")
    for task in chosen:
        task_options.setdefault(task, {})["num_fewshot"] = str(shots)


def execute(
    args: argparse.Namespace,
    model: ModelSpec,
    tasks: list[str],
    task_options: dict[str, dict[str, str]],
    judge: str | None,
    **runner_options: Any,
) -> int:
    """Run through `evalharness.evaluate` and print; `runner_options` (a prebuilt backend or
    judge) go to the engine's `Runner`."""
    from evalharness.engine.api import RUN_BOUNDS, check_run_bounds, evaluate

    check_run_bounds(
        {key: getattr(args, key, None) for key in RUN_BOUNDS},
        name=lambda key: "--" + key.replace("_", "-"),
    )
    from evalharness.console import err_console, rich_progress
    from evalharness.engine.progress import no_progress

    try:
        results = evaluate(
            model,
            tasks,
            task_options=task_options,
            judge=judge,
            **judge_settings(args),
            judge_device=args.judge_device or getattr(args, "device", None),
            limit=getattr(args, "limit", None),
            seed=args.seed,
            store=args.store,
            progress=no_progress if (args.no_progress or args.json) else rich_progress,
            notify=(lambda message: None) if args.json else err_console.print,
            runner_options=runner_options,
        )
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is stored; run the same command to resume")
        return 130
    if args.json:
        print(json.dumps(results.raw))
    else:
        print_run(results.raw, results.store_path)
    return 0


def print_run(result: dict[str, Any], store_path: Any) -> None:
    """The summary table, call counts, judging tally and warnings of a finished run."""
    from evalharness.console import err_console, out_console, summary_table

    out_console.print(summary_table(result))
    calls = result["calls_made"]
    out_console.print(
        f"run {result['run_id']} · {calls['model']} model calls, {calls['judge']} judge calls"
        f" · {result['seconds']:.1f}s · store {store_path}"
    )
    judging = result["judging"]
    if judging:
        failed = judging["unjudged"]
        out_console.print(
            f"judging: {judging['items']} items, {judging['cached']} cached, "
            f"{judging['judged']} judged, {judging['parse_retries']} retried, "
            f"{judging['parse_failures']} unparseable, {failed['request_failed']} failed "
            f"requests, {failed['over_budget']} over budget"
            + (f" · HTTP errors {judging['http_errors']}" if judging["http_errors"] else "")
        )
    if result["status"] == "partial":
        err_console.print(
            "[yellow]some items are not judged yet: run the same command again to judge only "
            "those[/yellow]"
        )
    print_warnings(result["warnings"])


def print_warnings(warnings: Sequence[str]) -> None:
    """A run's warnings on stderr, dimmed, printed as they are (no markup, no highlighting)."""
    from evalharness.console import err_console

    for warning in warnings:
        err_console.print(warning, style="dim", markup=False, highlight=False, soft_wrap=True)
