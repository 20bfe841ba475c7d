"""`evalharness` command line: run, tasks, show, runs, serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from evalharness import __version__
from evalharness.errors import BackendError, InputError
from evalharness.modelspec import ALIASES, DEFAULT_MODEL_ALIAS, ModelSpec, parse_model_spec
from evalharness.paths import default_store_path

DEFAULT_TASK = "mt_bench"
#: The offline default: the authored MT-Bench-format set, answers capped so it runs on a laptop.
DEFAULT_TASK_OPTIONS = {"mt_bench": {"data": "builtin", "max_new_tokens": "256"}}


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL_ALIAS, help="hf:PATH_OR_ID, openai:NAME or alias"
    )
    parser.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16, auto")
    parser.add_argument("--batch-size", type=int, default=None, help="requests per batch (hf)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for openai:")
    parser.add_argument("--api-key-env", default=None, help="env var holding the API key")
    parser.add_argument("--concurrency", type=int, default=None, help="parallel API requests")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="allow model code from the hub",
    )


def _model_spec(args: argparse.Namespace) -> ModelSpec:
    return parse_model_spec(
        args.model,
        dtype=args.dtype,
        batch_size=args.batch_size,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
        trust_remote_code=args.trust_remote_code,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalharness", description="Evaluate language models on judged benchmarks."
    )
    parser.add_argument("--version", action="version", version=f"evalharness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser(
        "run",
        help="evaluate a model (no arguments: the offline demo on the built-in model)",
        description="Without arguments: MT-Bench (authored 8-question set) on SmolLM2-135M, "
        "judged by itself through its own rating probabilities. A pipeline demonstration, "
        "not a meaningful judge.",
    )
    _add_model_options(run)
    run.add_argument(
        "--tasks", default=None, help=f"comma-separated task names (default {DEFAULT_TASK})"
    )
    run.add_argument(
        "--task-arg",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="task option, e.g. mt_bench.data=PATH (repeatable)",
    )
    run.add_argument("--judge", default="self", help="judge model spec, or 'self' (default)")
    run.add_argument(
        "--judge-mode", default="auto", help="auto, probs (token probabilities) or text"
    )
    run.add_argument("--judge-base-url", default=None, help="endpoint for an openai: judge")
    run.add_argument(
        "--judge-max-tokens", type=int, default=512, help="judge output budget in text mode"
    )
    run.add_argument("--limit", type=int, default=None, help="at most N samples per task")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--store", default=None, help="run store (SQLite) path")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    commands.add_parser("tasks", help="list available tasks")

    show = commands.add_parser("show", help="show a stored run")
    show.add_argument("run_id", help="run id, a unique prefix of one, or 'latest'")
    show.add_argument("--store", default=None)
    show.add_argument("--json", action="store_true")

    runs = commands.add_parser("runs", help="list stored runs")
    runs.add_argument("--store", default=None)

    serve = commands.add_parser("serve", help="OpenAI-compatible server for an hf: model")
    _add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-name", default=None, help="model name clients use")
    return parser


def _parse_task_args(pairs: Sequence[str]) -> dict[str, dict[str, str]]:
    options: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        task, dot, option = key.partition(".")
        if not sep or not dot or not task or not option:
            raise InputError(f"--task-arg {pair!r}: expected TASK.KEY=VALUE")
        options.setdefault(task, {})[option] = value
    return options


def _open_store(path: str | None):  # noqa: ANN202 - RunStore, imported lazily
    from evalharness.store import RunStore

    return RunStore(path or default_store_path())


def cmd_run(args: argparse.Namespace) -> int:
    from evalharness.console import err_console, out_console, rich_progress, summary_table
    from evalharness.engine import Runner, RunSpec, no_progress

    task_options = _parse_task_args(args.task_arg)
    if args.tasks is None:
        tasks = [DEFAULT_TASK]
        for task, defaults in DEFAULT_TASK_OPTIONS.items():
            task_options[task] = {**defaults, **task_options.get(task, {})}
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not tasks:
            raise InputError("--tasks is empty")
    unknown = set(task_options) - set(tasks)
    if unknown:
        raise InputError(f"--task-arg names task {sorted(unknown)[0]!r}, which is not in --tasks")
    spec = RunSpec(
        model=_model_spec(args),
        tasks=tasks,
        task_options=task_options,
        judge=args.judge,
        judge_mode=args.judge_mode,
        judge_base_url=args.judge_base_url,
        judge_max_new_tokens=args.judge_max_tokens,
        limit=args.limit,
        seed=args.seed,
    )
    store = _open_store(args.store)
    progress = no_progress if (args.no_progress or args.json) else rich_progress
    try:
        outcome = Runner(store, progress=progress).run(spec)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is stored; run the same command to resume")
        return 130
    finally:
        store.close()
    result = outcome.to_json()
    if args.json:
        print(json.dumps(result))
    else:
        out_console.print(summary_table(result))
        calls = result["calls_made"]
        out_console.print(
            f"run {result['run_id']} · {calls['model']} model calls, {calls['judge']} judge calls"
            f" · {result['seconds']:.1f}s · store {store.path}"
        )
        if args.judge == "self":
            err_console.print(
                "[dim]judged by the model itself: a demonstration of the pipeline, not a "
                "meaningful judge; pass --judge for real grading[/dim]"
            )
    return 0


def cmd_tasks(_: argparse.Namespace) -> int:
    from evalharness.tasks import available_tasks

    for name, cls in available_tasks().items():
        print(f"{name}\t{cls.description}")
    return 0


def _resolve_run(store: Any, run_id: str) -> str:
    if run_id == "latest":
        runs = store.list_runs()
        if not runs:
            raise InputError(f"{store.path}: no runs stored")
        return max(runs, key=lambda r: r["created_at"])["run_id"]
    matches = store.find_runs(run_id)
    if not matches:
        raise InputError(f"no run {run_id!r} in {store.path}")
    if len(matches) > 1:
        raise InputError(f"run id prefix {run_id!r} is ambiguous ({len(matches)} runs)")
    return matches[0]


def run_summary(store: Any, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    tasks = {}
    for task in store.get_tasks(run_id):
        entry = task["metrics"] or {"n": task["n"], "failures": task["failures"], "metrics": {}}
        tasks[task["task"]] = entry
    return {
        "run_id": run_id,
        "model": run["model"],
        "judge": run["judge"],
        "status": run["status"],
        "tasks": tasks,
        "calls_made": {"model": 0, "judge": 0},
        "provenance": run["provenance"],
    }


def cmd_show(args: argparse.Namespace) -> int:
    from evalharness.console import out_console, summary_table

    store = _open_store(args.store)
    try:
        summary = run_summary(store, _resolve_run(store, args.run_id))
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary))
    else:
        out_console.print(summary_table(summary))
        prov = summary["provenance"]
        out_console.print(f"status {summary['status']} · judge {summary['judge']}")
        out_console.print(f"packages {json.dumps(prov['packages'])}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        for run in store.list_runs():
            print(f"{run['run_id']}\t{run['status']}\t{run['model']}\tjudge={run['judge']}")
    finally:
        store.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from evalharness.backends import load_backend
    from evalharness.backends.hf import HFBackend
    from evalharness.serve import serve

    spec = _model_spec(args)
    backend = load_backend(spec)
    if not isinstance(backend, HFBackend):
        raise InputError(f"serve needs an hf: model, not {spec.raw!r}")
    serve(backend, args.served_name or spec.raw, host=args.host, port=args.port)
    return 0


COMMANDS = {
    "run": cmd_run,
    "tasks": cmd_tasks,
    "show": cmd_show,
    "runs": cmd_runs,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "model", "").lower() in ALIASES:
        # The built-in model is local: never let transformers wait on the hub for it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return COMMANDS[args.command](args)
    except (InputError, BackendError) as exc:
        print(f"evalharness: error: {exc}", file=sys.stderr)
        return exc.exit_code
