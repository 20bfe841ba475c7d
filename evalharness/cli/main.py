"""`evalharness` command line: the parser and the run/import/show/serve commands.

Command groups with their own module: compare (`compare_cli`), judge/agreement/drift
(`verdict_cli`), train/methods/pipeline (`train_cli`), score (`scoring_cli`), export
(`export_cli`); `import mt-bench` is `mt_bench_import`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalharness import __version__
from evalharness.backends.devices import DEVICE_HELP, DEVICE_MAPS
from evalharness.backends.spec import ALIASES, DEFAULT_MODEL_ALIAS, ModelSpec, parse_model_spec
from evalharness.cli.compare import add_compare_parser, cmd_compare
from evalharness.cli.export import add_export_parser, cmd_export
from evalharness.cli.parity import add_parity_parser, cmd_parity
from evalharness.cli.report import add_report_parser, cmd_report
from evalharness.cli.verdicts import add_verdict_parsers, cmd_agreement, cmd_drift, cmd_judge
from evalharness.engine.api import DEFAULT_TASK_OPTIONS
from evalharness.errors import BackendError, InputError
from evalharness.formats.mt_bench_import import add_mt_bench_import_options, import_mt_bench

DEFAULT_TASKS = list(DEFAULT_TASK_OPTIONS)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL_ALIAS, help="hf:PATH_OR_ID, openai:NAME or alias"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        help="auto (default: the checkpoint's dtype, e.g. bfloat16, on an accelerator; float32 "
        "on the CPU), float32, bfloat16, float16",
    )
    add_device_options(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="requests per batch (hf)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for openai:")
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="env var holding the API key (openai: sends it; serve requires it from clients); "
        "without it $OPENAI_API_KEY is sent to api.openai.com only",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="parallel API requests")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="allow model code from the hub",
    )
    vllm = parser.add_argument_group("vllm: engine options")
    vllm.add_argument("--tensor-parallel-size", type=int, default=None, help="GPUs per model")
    vllm.add_argument("--max-model-len", type=int, default=None, help="context length cap")
    vllm.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="memory share for weights and KV cache (0.9 of a GPU; 0.3 of RAM on CPU)",
    )
    vllm.add_argument(
        "--enforce-eager",
        action="store_true",
        default=None,
        help="no CUDA graphs / torch.compile (the default on CPU)",
    )
    vllm.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        default=None,
        help="disable automatic prefix caching",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="backend replicas as Ray actors, requests split across them (hf:, vllm:)",
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """`--device` and `--device-map`: where a model named by a spec runs
    (`evalharness.backends.devices`)."""
    parser.add_argument(
        "--device", default=None, help=f"where the model runs: {DEVICE_HELP}; default auto"
    )
    parser.add_argument(
        "--device-map",
        default=None,
        help="spread the model over every visible GPU with accelerate's placement when it is "
        f"too large for one: {', '.join(DEVICE_MAPS)}; not with an explicit --device",
    )


def _add_judge_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--judge",
        default=None,
        help="judge: 'self', a model spec (hf:, openai:), rm:REWARD_MODEL, clf:CLASSIFIER, "
        "rules:NAME_OR_YAML, regex:PATTERN, refusal-regex:PATTERN, annotations:FILE "
        "(default: each task's own default, else 'self')",
    )
    parser.add_argument(
        "--judge-mode", default="auto", help="auto, probs (token probabilities) or text"
    )
    parser.add_argument("--judge-base-url", default=None, help="endpoint for an openai: judge")
    parser.add_argument(
        "--judge-api-key-env",
        default=None,
        metavar="NAME",
        help="env var holding an openai: judge's API key (without it $OPENAI_API_KEY is sent "
        "to api.openai.com only)",
    )
    parser.add_argument(
        "--judge-max-tokens", type=int, default=512, help="judge output budget in text mode"
    )
    parser.add_argument(
        "--judge-concurrency", type=int, default=None, help="parallel judge API requests"
    )
    parser.add_argument(
        "--judge-timeout", type=float, default=None, help="seconds per judge API request"
    )
    parser.add_argument(
        "--judge-http-retries",
        type=int,
        default=None,
        help="retries (with backoff) per judge API request on 429, 5xx and timeouts",
    )
    parser.add_argument(
        "--judge-retries",
        type=int,
        default=2,
        help="times a verdict that does not parse is asked again (text mode)",
    )
    parser.add_argument(
        "--max-judge-calls",
        type=int,
        default=None,
        help="judge call budget for this invocation; the rest stays unjudged until a re-run",
    )
    parser.add_argument(
        "--judge-device",
        default=None,
        help=f"where a judge that is a local model (hf:, rm:, clf:) runs: {DEVICE_HELP} "
        "(default: --device)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, help="run store (SQLite) path")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _model_spec(args: argparse.Namespace) -> ModelSpec:
    return parse_model_spec(
        args.model,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        batch_size=args.batch_size,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
        trust_remote_code=args.trust_remote_code,
        tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        prefix_caching=args.prefix_caching,
        enforce_eager=args.enforce_eager,
        workers=args.workers,
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
        help="evaluate a model (no arguments: the offline suite on the built-in model)",
        description="Without arguments: every task on its authored data with SmolLM2-135M; "
        "MT-Bench and AlpacaEval judged by the model itself through its own probabilities (a "
        "pipeline demonstration, not a meaningful judge), safety by refusal rules.",
    )
    _add_model_options(run)
    run.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated task names (default: the offline suite {','.join(DEFAULT_TASKS)})",
    )
    run.add_argument(
        "--task-arg",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="task option, e.g. mt_bench.data=PATH (repeatable)",
    )
    _add_judge_options(run)
    run.add_argument(
        "--mode", default=None, help="single or pairwise (tasks that compare with a baseline)"
    )
    run.add_argument(
        "--baseline", default=None, help="pairwise baseline: a stored run id or a model spec"
    )
    run.add_argument(
        "--num-fewshot",
        type=int,
        default=None,
        metavar="N",
        help="few-shot examples for lm-eval task YAMLs in --tasks (as lm_eval --num_fewshot)",
    )
    run.add_argument("--limit", type=int, default=None, help="at most N samples per task")
    run.add_argument("--seed", type=int, default=0)
    _add_output_options(run)

    importer = commands.add_parser(
        "import",
        help="create a run from outputs (and verdicts) produced elsewhere",
        description="alpaca-eval: read AlpacaEval model_outputs.json, and its annotations when "
        "given (no judge call is made); or judge the outputs with --judge. mt-bench: read "
        "FastChat model_answer/X.jsonl, and its ratings from --judgments, or judge with --judge.",
    )
    importer.add_argument("format", choices=["alpaca-eval", "mt-bench"])
    importer.add_argument("--outputs", default=None, help="model_outputs.json (or JSONL)")
    importer.add_argument(
        "--annotations", default=None, help="AlpacaEval annotations.json for these outputs"
    )
    importer.add_argument("--name", default=None, help="model name (default: the generator)")
    importer.add_argument(
        "--reference",
        default=None,
        help="reference outputs (model_outputs format; default: the annotations' output_1, "
        "else the hub set)",
    )
    importer.add_argument(
        "--calibration",
        default=None,
        help="AlpacaEval's df_gamed.csv for length_controlled_winrate (default: the Hugging Face "
        "cache of tatsu-lab/alpaca_eval; 'none': skip it)",
    )
    # Replaced by --calibration; still parsed so that the task can say so in one line.
    importer.add_argument("--difficulty", default=None, help=argparse.SUPPRESS)
    importer.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="import even when annotations judged a different output_2 than --outputs holds "
        "(those rows count as failures; default: refuse)",
    )
    add_mt_bench_import_options(importer)
    _add_judge_options(importer)
    importer.add_argument(
        "--device", default=None, help=f"where a local --judge runs: {DEVICE_HELP}; default auto"
    )
    importer.add_argument("--seed", type=int, default=0)
    _add_output_options(importer)

    commands.add_parser("tasks", help="list available tasks")

    show = commands.add_parser("show", help="show a stored run")
    show.add_argument("run_id", help="run id, a unique prefix of one, or 'latest'")
    show.add_argument("--store", default=None)
    show.add_argument("--json", action="store_true")

    runs = commands.add_parser("runs", help="list stored runs")
    runs.add_argument("--store", default=None)

    add_verdict_parsers(commands)

    score = commands.add_parser(
        "score",
        help="log-likelihood of continuations, as lm-evaluation-harness computes it",
        description="Reads JSONL rows with context, continuation and an optional id; prints "
        "one JSON line per row, in input order, with the id, logprob (summed over the "
        "continuation's tokens), n_tokens and is_greedy: lm-eval's loglikelihood numbers.",
    )
    _add_model_options(score)
    score.add_argument("--input", required=True, help="JSONL file of rows, or - for stdin")

    from evalharness.cli.train import add_train_parsers

    add_train_parsers(commands)
    add_compare_parser(commands)
    add_report_parser(commands)
    add_parity_parser(commands)
    add_export_parser(commands)

    merge = commands.add_parser(
        "merge",
        help="average fine-tuned checkpoints of one architecture into a new hf: checkpoint",
        description="uniform: the mean of all weights; greedy: the model-soup recipe, each "
        "checkpoint kept only if the held-out log-likelihood of --heldout rows does not drop; "
        "linear: (1 - alpha) * first + alpha * second (WiSE-FT).",
    )
    merge.add_argument("--method", required=True, choices=["uniform", "greedy", "linear"])
    merge.add_argument("--models", required=True, help="checkpoint directories, comma-separated")
    merge.add_argument("--out", required=True, help="new (empty) output directory")
    merge.add_argument("--alpha", type=float, default=0.5, help="linear: weight of the second")
    merge.add_argument(
        "--heldout", default=None, help="greedy: JSONL rows {context, continuation} to score"
    )

    serve = commands.add_parser("serve", help="OpenAI-compatible server for an hf: model")
    _add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-name", default=None, help="model name clients use")
    serve.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="most rows (prompts x choices) of waiting requests run in one batch (default 32)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --host without --api-key-env (anyone reaching it can use it)",
    )
    return parser


def _parse_task_args(pairs: Sequence[str]) -> dict[str, dict[str, str]]:
    options: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        task, dot, option = key.rpartition(".")  # a task may be a path: tasks/arc.yaml.KEY
        if not sep or not dot or not task or not option:
            raise InputError(f"--task-arg {pair!r}: expected TASK.KEY=VALUE")
        options.setdefault(task, {})[option] = value
    return options


def _open_store(path: str | None, *, read_only: bool = False):  # noqa: ANN202 - RunStore
    from evalharness.store.run_store import open_store

    return open_store(path, read_only=read_only)


def cmd_run(args: argparse.Namespace) -> int:
    task_options = _parse_task_args(args.task_arg)
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
        _set_num_fewshot(tasks, task_options, args.num_fewshot)
    return _execute(args, _model_spec(args), tasks, task_options, judge=args.judge)


def _set_num_fewshot(tasks: list[str], task_options: dict[str, dict[str, str]], shots: int) -> None:
    """`--num-fewshot` is the `num_fewshot` option of every lm-eval task YAML in --tasks."""
    from evalharness.tasks.declarative.sources import is_lm_eval_source

    if shots < 0:
        raise InputError(f"--num-fewshot must be 0 or more, not {shots}")
    chosen = [task for task in tasks if is_lm_eval_source(Path(task).expanduser())]
    if not chosen:
        raise InputError("--num-fewshot applies to lm-eval task YAMLs, and --tasks names none")
    for task in chosen:
        task_options.setdefault(task, {})["num_fewshot"] = str(shots)


def _execute(
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
    from evalharness.console import err_console, out_console, rich_progress, summary_table
    from evalharness.engine.progress import no_progress

    try:
        results = evaluate(
            model,
            tasks,
            task_options=task_options,
            judge=judge,
            judge_mode=args.judge_mode,
            judge_base_url=args.judge_base_url,
            judge_api_key_env=args.judge_api_key_env,
            judge_max_new_tokens=args.judge_max_tokens,
            judge_concurrency=args.judge_concurrency,
            judge_timeout_s=args.judge_timeout,
            judge_http_retries=args.judge_http_retries,
            judge_retries=args.judge_retries,
            max_judge_calls=args.max_judge_calls,
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
    result = results.raw
    if args.json:
        print(json.dumps(result))
        return 0
    out_console.print(summary_table(result))
    calls = result["calls_made"]
    out_console.print(
        f"run {result['run_id']} · {calls['model']} model calls, {calls['judge']} judge calls"
        f" · {result['seconds']:.1f}s · store {results.store_path}"
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
    for warning in result["warnings"]:
        err_console.print(warning, style="dim", markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """AlpacaEval outputs (+ annotations) become a run; metrics come from the harness's code."""
    if args.format == "mt-bench":
        return import_mt_bench(args, _execute)
    if not args.outputs:
        raise InputError("import alpaca-eval needs --outputs FILE (model_outputs.json)")
    if args.annotations and args.judge:
        raise InputError("give --annotations (import verdicts) or --judge (judge now), not both")
    if not args.annotations and not args.judge:
        raise InputError("give --annotations FILE to import verdicts, or --judge SPEC to judge")
    from evalharness.formats.records import input_file
    from evalharness.store.run_store import check_store_file, store_location

    check_store_file(*store_location(args.store))  # before reading files that may take a while
    for option in ("outputs", "annotations"):  # errors name the flag used
        if getattr(args, option):
            input_file(Path(getattr(args, option)), f"--{option}")
    from evalharness.tasks.alpaca_eval.calibration import is_path

    if is_path(args.calibration):
        input_file(Path(args.calibration), "--calibration")
    options = {"data": args.reference or args.annotations or "hub"}
    for option in ("calibration", "difficulty"):  # the task refuses `difficulty`, saying why
        if getattr(args, option):
            options[option] = getattr(args, option)
    model = parse_model_spec(f"outputs:{args.outputs}")
    if args.name:
        model = model.with_options(raw=f"outputs:{args.name}")
    judge = f"annotations:{args.annotations}" if args.annotations else args.judge
    if judge.startswith("annotations:"):
        _check_annotated_outputs(Path(judge.partition(":")[2]), Path(args.outputs), args)
    return _execute(args, model, ["alpaca_eval"], {"alpaca_eval": options}, judge=judge)


def _check_annotated_outputs(annotations: Path, outputs: Path, args: argparse.Namespace) -> None:
    """Refuse, before anything is stored, annotations that judged other outputs than these.

    A preference about another answer (an older generation, another model) would be counted
    as this model's. With --allow-mismatch the import goes ahead and those rows are failures.
    """
    from evalharness.backends.outputs import read_outputs
    from evalharness.console import err_console
    from evalharness.judges.annotations import mismatched, read_annotations

    rows, _ = read_annotations(annotations)
    differing = mismatched(rows, read_outputs(outputs)[0])
    if not differing:
        return
    what = (
        f"{annotations}: {len(differing)} annotation(s) judged an output_2 other than "
        f"--outputs holds (first: {differing[0][:50]!r})"
    )
    if not args.allow_mismatch:
        raise InputError(f"{what}; fix the files, or pass --allow-mismatch to count them failed")
    err_console.print(
        f"warning: {what}; counted as failures", markup=False, highlight=False, soft_wrap=True
    )


def cmd_tasks(_: argparse.Namespace) -> int:
    from evalharness.tasks.registry import available_tasks

    for name, cls in available_tasks().items():
        print(f"{name}\t{cls.description}")
    return 0


def run_summary(store: Any, run_id: str) -> dict[str, Any]:
    from evalharness.engine.run_warnings import run_warnings

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
        "warnings": run_warnings(run["spec"], tasks),
        "provenance": run["provenance"],
        "devices": run["provenance"].get("devices", {}),
    }


def cmd_show(args: argparse.Namespace) -> int:
    from evalharness.console import err_console, out_console, summary_table

    store = _open_store(args.store, read_only=True)
    try:
        summary = run_summary(store, store.resolve_run(args.run_id))
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary))
    else:
        out_console.print(summary_table(summary))
        prov = summary["provenance"]
        out_console.print(f"status {summary['status']} · judge {summary['judge']}")
        out_console.print(f"packages {json.dumps(prov['packages'])}")
        if prov.get("devices"):
            out_console.print(f"devices {json.dumps(prov['devices'])}", markup=False)
        for warning in summary["warnings"]:
            err_console.print(warning, style="dim", markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = _open_store(args.store, read_only=True)
    try:
        for run in store.list_runs():
            print(f"{run['run_id']}\t{run['status']}\t{run['model']}\tjudge={run['judge']}")
    finally:
        store.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from evalharness.backends import load_backend
    from evalharness.backends.hf import HFBackend
    from evalharness.serve import bind_port, check_exposure, serve

    spec = _model_spec(args)
    if spec.workers > 1:
        raise InputError("serve runs the model in its own process: --workers is for run and score")
    if args.max_batch < 1:
        raise InputError(f"--max-batch must be at least 1, not {args.max_batch}")
    api_key = _serve_api_key(spec.api_key_env)
    # Before anything loads, so a refused --host costs nothing and never binds.
    warning = check_exposure(args.host, api_key, args.insecure)
    if warning:
        print(f"evalharness: warning: {warning}", file=sys.stderr)
    # A bad or busy --port fails now, not after the model has loaded.
    with bind_port(args.host, args.port) as sock:
        backend = load_backend(spec)
        if not isinstance(backend, HFBackend):
            raise InputError(f"serve needs an hf: model, not {spec.raw!r}")
        name = args.served_name or spec.raw
        serve(
            backend,
            name,
            host=args.host,
            port=args.port,
            api_key=api_key,
            insecure=args.insecure,
            max_batch=args.max_batch,
            sock=sock,
        )
    return 0


def _serve_api_key(name: str | None) -> str | None:
    """The key clients of `serve` must send, from the variable `--api-key-env` names.

    A named variable that is unset or empty is an error: serving without the key the user
    asked for would expose the model. The value is never printed.
    """
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise InputError(f"--api-key-env {name}: ${name} is not set or is empty")
    return value


def cmd_merge(args: argparse.Namespace) -> int:
    from evalharness.trainers.merging import merge_command

    models = args.models.split(",")
    return merge_command(args.method, models, args.out, alpha=args.alpha, heldout=args.heldout)


def cmd_score(args: argparse.Namespace) -> int:
    from evalharness.cli.score import score_command

    return score_command(_model_spec(args), args.input)


COMMANDS = {
    "run": cmd_run,
    "import": cmd_import,
    "agreement": cmd_agreement,
    "drift": cmd_drift,
    "judge": cmd_judge,
    "tasks": cmd_tasks,
    "show": cmd_show,
    "runs": cmd_runs,
    "serve": cmd_serve,
    "score": cmd_score,
    "merge": cmd_merge,
    "train": lambda args: _train_cli().cmd_train(args),
    "methods": lambda args: _train_cli().cmd_methods(args),
    "pipeline": lambda args: _train_cli().cmd_pipeline(args),
    "compare": cmd_compare,
    "report": cmd_report,
    "parity": cmd_parity,
    "export": cmd_export,
}


def _train_cli():  # noqa: ANN202 - the module, imported only when a training command runs
    from evalharness.cli import train as train_cli

    return train_cli


def _check_environment() -> None:
    """Environment variables the user set are input too: check them before any work starts."""
    from evalharness.kernels.implementations import check_scoring_env

    check_scoring_env()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 2
    if (getattr(args, "model", None) or "").lower() in ALIASES:
        # The built-in model is local: never let transformers wait on the hub for it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        _check_environment()
        return COMMANDS[args.command](args)
    except (InputError, BackendError) as exc:
        print(f"evalharness: error: {exc}", file=sys.stderr)
        return exc.exit_code
