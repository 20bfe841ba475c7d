"""`evalharness train` and `evalharness methods`: the command-line face of `trainers/`.

The flags (and a `--config` YAML they override) become a checked `TrainConfig`;
`engine.training` runs it and lists the methods.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from evalharness.backends.devices import DEVICE_HELP
from evalharness.engine.training import check_method
from evalharness.errors import InputError

#: Flags that map one-to-one onto TrainConfig fields (flag name → field name).
FLAG_FIELDS = {
    "method": "method",
    "model": "model",
    "data": "data",
    "out": "out",
    "reference": "reference",
    "eval_data": "eval_data",
    "eval_fraction": "eval_fraction",
    "lr": "learning_rate",
    "epochs": "epochs",
    "max_steps": "max_steps",
    "batch_size": "batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_length",
    "max_prompt_length": "max_prompt_length",
    "warmup_ratio": "warmup_ratio",
    "dtype": "dtype",
    "device": "device",
    "mixed_precision": "mixed_precision",
    "tf32": "tf32",
    "seed": "seed",
    "limit": "limit",
    "eval_every": "eval_every",
    "save_every": "save_every",
    "group_size": "group_size",
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "reward": "reward",
    "rollouts": "rollouts",
    "pack": "pack",
}


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    """`evalharness train`: train a model with any alignment method (see `evalharness methods`)

    One loop for every method; the result is a checkpoint `hf:OUT` evaluates.
    """
    train.add_argument("--config", help="YAML file of settings (flags override it)")
    train.add_argument("--method", help="loss name, e.g. sft, dpo, kto, simpo, grpo")
    train.add_argument("--model", help="starting model spec (hf:DIR, hub id, smollm2)")
    train.add_argument("--data", help="JSONL / Parquet / save_to_disk dir / hub dataset id")
    train.add_argument("--out", help="output directory for the checkpoint and metrics")
    train.add_argument(
        "--loss-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="loss hyperparameter, e.g. beta=0.1 (repeatable)",
    )
    train.add_argument("--reference", help="reference model spec (default: the start model)")
    train.add_argument("--eval-data", help="held-out data (default: --eval-fraction of --data)")
    train.add_argument("--eval-fraction", type=float)
    train.add_argument("--lr", type=float, help="learning rate (default 5e-6)")
    train.add_argument("--epochs", type=float)
    train.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--grad-accum", type=int, help="gradient accumulation steps")
    train.add_argument("--max-length", type=int)
    train.add_argument("--max-prompt-length", type=int)
    train.add_argument("--warmup-ratio", type=float)
    train.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights' dtype (default auto: the checkpoint's on an accelerator, float32 on cpu)",
    )
    train.add_argument("--device", help=f"where to train: {DEVICE_HELP} (default auto)")
    train.add_argument(
        "--mixed-precision",
        choices=["auto", "no", "bf16", "fp16"],
        help="autocast (default auto: bf16 on a CUDA GPU, as TRL's configs; no on cpu)",
    )
    train.add_argument(
        "--no-tf32",
        dest="tf32",
        action="store_false",
        default=None,
        help="keep float32 matrix products in IEEE precision on CUDA (default: TF32)",
    )
    train.add_argument("--seed", type=int)
    train.add_argument("--limit", type=int, help="use only the first N training rows")
    train.add_argument("--eval-every", type=int)
    train.add_argument("--save-every", type=int)
    train.add_argument("--lora", action="store_true", help="train LoRA adapters (peft)")
    train.add_argument(
        "--pack",
        action="store_true",
        default=None,
        help="sft/dft: pack examples into --max-length rows (isolated only with flash-attention)",
    )
    train.add_argument("--lora-rank", type=int)
    train.add_argument("--lora-alpha", type=int)
    train.add_argument("--qlora", action="store_true", help="LoRA on a 4-bit base (CUDA only)")
    train.add_argument(
        "--peft",
        metavar="TYPE",
        help="train a PEFT adapter: lora, dora, rslora, pissa, olora, corda, adalora, ia3, vera, "
        "loha, lokr, oft, boft (--lora means --peft lora)",
    )
    train.add_argument(
        "--peft-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an argument of peft's config class for --peft, e.g. r=8 (a YAML value; repeatable)",
    )
    train.add_argument("--group-size", type=int, help="online methods: samples per prompt")
    train.add_argument("--max-new-tokens", type=int, help="online methods: sample length")
    train.add_argument("--temperature", type=float, help="online methods: sampling temperature")
    train.add_argument(
        "--reward",
        metavar="SPEC",
        help="online methods: rm:DIR, python:MODULE:FUNCTION, judge:MODEL (1-10 rating), "
        "pairwise:MODEL, rules:NAME_OR_YAML, refusal-rules, regex:PATTERN, "
        "refusal-regex:PATTERN or exact[:FIELD]; weighted sums and judge options in the "
        "config's reward: list (README: Rewards for online methods)",
    )
    train.add_argument(
        "--rollouts",
        choices=["auto", "hf", "vllm"],
        help="online methods: who samples: vllm (an engine synced to the policy each step), "
        "hf (generate), auto (default: vllm on a CUDA GPU when it is installed, else hf)",
    )
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def add_methods_arguments(methods: argparse.ArgumentParser) -> None:
    """`evalharness methods`: list training methods and their data"""
    methods.add_argument("--json", action="store_true")


#: The commands this module declares, in the order `evalharness --help` lists them.
SUBCOMMANDS = (add_train_arguments, add_methods_arguments)


def parse_loss_args(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--loss-arg expects NAME=VALUE, got {pair!r}")
        values[name.strip()] = value.strip()
    return values


def config_from_args(args: argparse.Namespace) -> Any:
    """Settings from `--config` YAML, overridden by any flag given on the command line.

    Every value is type-checked here and the method and its hyperparameters are looked up, so
    a mistake in the file is reported (with its line) before any model or data is loaded.
    """
    from evalharness.formats.records import read_yaml_lines
    from evalharness.trainers.config import TrainConfig

    mapping: dict[str, Any] = {}
    where = "command line"
    locate = None
    if args.config:
        path = Path(args.config)
        where = str(path)
        loaded, lines = read_yaml_lines(path, "--config")
        if not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping of training settings")
        mapping.update(loaded)
        locate = lines.where
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            mapping[name] = value
    if args.loss_arg and isinstance(mapping.get("loss_args") or {}, dict):
        given = mapping.get("loss_args") or {}
        mapping["loss_args"] = {**given, **parse_loss_args(args.loss_arg)}
    if args.peft or args.peft_arg:
        mapping["peft"] = _peft_mapping(args, mapping)
        mapping.pop("lora", None)  # a flag overrides the file: --peft replaces its lora:
    elif args.lora or args.qlora or args.lora_rank or args.lora_alpha:
        lora = mapping.get("lora") if isinstance(mapping.get("lora"), dict) else {}
        if args.qlora:
            lora["load_in_4bit"] = True
        if args.lora_rank:
            lora["rank"] = args.lora_rank
        if args.lora_alpha:
            lora["alpha"] = args.lora_alpha
        mapping["lora"] = lora
    config = TrainConfig.from_mapping(mapping, where, locate=locate)
    check_method(config, locate or (lambda *keys: where))
    return config


def parse_peft_args(pairs: list[str]) -> dict[str, Any]:
    """`--peft-arg NAME=VALUE` pairs; each value read as YAML (8, 0.1, true, [q_proj, v_proj])."""
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--peft-arg expects NAME=VALUE, got {pair!r}")
        try:
            values[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError(f"--peft-arg {name.strip()}: {value!r} is not a YAML value") from None
    return values


def _peft_mapping(args: argparse.Namespace, mapping: dict[str, Any]) -> dict[str, Any]:
    """The `peft:` mapping from --peft/--peft-arg (and --qlora) over the file's own `peft:`."""
    if args.lora or args.lora_rank or args.lora_alpha:
        raise InputError(
            "--lora/--lora-rank/--lora-alpha set a plain LoRA; with --peft use --peft-arg r=N "
            "and --peft-arg lora_alpha=N"
        )
    given = mapping.get("peft")
    peft = dict(given) if isinstance(given, dict) else {"type": given} if given else {}
    if args.peft:
        peft["type"] = args.peft
    elif "type" not in peft:
        raise InputError("--peft-arg needs --peft TYPE (or a peft: type in --config)")
    peft.update(parse_peft_args(args.peft_arg))
    if args.qlora:
        peft["load_in_4bit"] = True
    return peft


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before importing torch: a bad file fails in a blink
    from evalharness.engine.training import run_training, training_report
    from evalharness.trainers import losses

    method = losses.method(config.method)
    summary = run_training(method, config, progress=not args.quiet)
    result = training_report(method, summary)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # one of several launched processes: the main one reports
    if args.json:
        print(json.dumps(result))
    else:
        _print_summary(result)
    return 0


def _print_summary(result: dict[str, Any]) -> None:
    print(
        f"trained {result['method']}: {result['steps']} steps, {result['examples']} examples, "
        f"{result['seconds']} s"
    )
    for name in sorted(set(result["eval_before"]) | set(result["eval_after"])):
        before = result["eval_before"].get(name)
        after = result["eval_after"].get(name)
        print(f"  {name}: {_fmt(before)} -> {_fmt(after)}")
    print(
        f"checkpoint: {result['out']}  (evaluate with: evalharness run --model hf:{result['out']})"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_methods(args: argparse.Namespace) -> int:
    from evalharness.engine.training import method_rows, option_defaults, option_meanings
    from evalharness.trainers import losses

    rows = method_rows()
    options = option_defaults(rows)
    if args.json:
        for row in rows:
            row["options"] = option_meanings(row)
        print(json.dumps(rows, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="training methods")
    columns = ("method", "kind", "data", "reference", "hyperparameters", "what it optimises")
    for column in columns:
        table.add_column(column)
    trained = [row for row in rows if not row["tuning_free"]]
    for row in trained:
        hyper = ", ".join(f"{k}={v}" for k, v in row["hyperparameters"].items())
        reference = "yes" if row["reference"] else ""
        table.add_row(row["name"], row["kind"], row["data"], reference, hyper, row["summary"])
    console = Console(file=sys.stdout, width=160)
    console.print(table)
    for name, text in losses.DATA_FORMATS.items():
        console.print(f"[bold]{name}[/]: {text}")
    console.print("[bold]options[/] (default; meaning):")
    for name, defaults in options.items():
        line = f"  {name} ({defaults}): {losses.OPTIONS[name].meaning}"
        console.print(line, highlight=False, soft_wrap=True)
    _print_tuning_free(console, [row for row in rows if row["tuning_free"]])
    return 0


def _print_tuning_free(console: Any, rows: list[dict[str, Any]]) -> None:
    """The tuning-free methods: model specs to evaluate (`evalharness run --model SPEC`)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="tuning-free methods (model specs: evalharness run --model SPEC)")
    for column in ("method", "kind", "spec", "options (default)", "what it does"):
        table.add_column(column, overflow="fold")
    for row in rows:
        options = ", ".join(
            f"{k}={'null' if v is None else v}" for k, v in row["hyperparameters"].items()
        )
        table.add_row(row["name"], row["kind"], escape(row["spec"]), options, row["summary"])
    console.print(table)
    for row in rows:
        for name, meaning in row["options"].items():
            line = f"  {row['name']} {name}: {meaning}"
            console.print(escape(line), highlight=False, soft_wrap=True)
