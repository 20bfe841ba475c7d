"""DPO training step: time per optimizer step and peak memory, evalharness vs TRL's DPOTrainer.

Run from the repository root::

    python benchmarks/train_step.py                      # tiny Llama, 50 timed steps
    python benchmarks/train_step.py --model smollm2      # SmolLM2-135M-Instruct, 4 timed steps
    python benchmarks/train_step.py --trl-python /tmp/trl-env/bin/python
    python benchmarks/train_step.py --device cuda --dtype bfloat16 --model PATH --synthetic

TRL is not a dependency of the project. Install it in a separate environment, with the same
torch, and point `--trl-python` at it (the default is this interpreter if it can import trl,
else /tmp/trl-env/bin/python if it exists)::

    python3 -m venv /tmp/trl-env
    /tmp/trl-env/bin/pip install torch==2.13.0
    /tmp/trl-env/bin/pip install trl==1.16.0 transformers==5.23.0 accelerate==1.15.0

Its worker imports only torch, transformers, datasets and trl (never evalharness), so that
environment needs nothing of this project. On a GPU machine where no second environment can be
made (no network), trl installed beside the project (`make test-gpu` carries it as a wheel)
is found in this interpreter, and each side still runs in a process of its own.

Sides
    ours               `evalharness.trainers.loop.Trainer(config)` with method `dpo`. Building it
                       loads the policy, tokenises the data and scores the reference once (the
                       sums are cached; the reference model is then freed), all untimed. The
                       timed loop is the body of `Trainer.run()` step for step: `compute_loss`,
                       `accelerator.backward`, `clip_grad_norm_`, AdamW step, LR scheduler step,
                       `zero_grad`, and `step_metrics` (which `run()` logs every step). Batches
                       are collated before timing (`Trainer.train_data.batch`), in index order.
    trl-ref            `trl.DPOTrainer`, `loss_type=["sigmoid"]`, defaults otherwise: a second
                       copy of the model is the reference and is run every step (TRL's default).
    trl-precomputed    the same with `precompute_ref_log_probs=True`: TRL scores the reference
                       once in its constructor (untimed), like ours.

    Both trainers get the same checkpoint in the same `--dtype` (float32 by default; bfloat16
    on a GPU loads the weights in bf16 and trains them so on both sides, no autocast), no
    gradient checkpointing, no dropout, AdamW
    (each trainer's own default: `torch.optim.AdamW` for ours, transformers' `adamw_torch_fused`
    for TRL), weight decay 0, gradient clipping at 1.0, a linear LR schedule over warm-up +
    timed steps, beta 0.1, the same batch size and learning rate, one process, no gradient
    accumulation. TRL runs with `use_cpu=True` on CPU, `report_to=[]`, `logging_strategy="no"`,
    `save_strategy="no"`, `dataloader_num_workers=0`, and `train_sampling_strategy="sequential"`
    so both sides see exactly the same batches in the same order.

Data
    Pairwise rows {prompt, chosen, rejected} as plain strings, written once to a JSONL file that
    both sides read. With `--data` (default: the HH-RLHF harmless-base test file under
    /work/shared/data when present) every dialogue is split at its last "\\n\\nAssistant:"
    (rows whose chosen and rejected prompts differ are skipped); rows that already have a
    `prompt` are used as they are. Without the file, synthetic
    dialogues are generated. The texts are cut with the model's tokenizer before either trainer
    sees them: the prompt to its last `--max-prompt-length` - 1 tokens, each completion to its
    first `--max-length` - `--max-prompt-length` - 1 tokens (room for BOS and EOS), so neither
    trainer truncates anything (TRL 1.x has no `max_prompt_length` and cuts whole sequences
    from the end; ours keeps the prompt's end) and both train on the same tokens. Each side
    reports the real (non-padding) tokens of every timed step; they must agree.

Time
    `--warmup` untimed optimizer steps, then `--steps` timed ones, each from just before the
    forward to just after `zero_grad` (ours: and `step_metrics`; TRL: a `TrainerCallback`'s
    `on_step_begin` and `on_step_end`, so its dataset tokenisation, reference precompute,
    collation and logging are outside). Reported: the median seconds per step and tokens/s =
    real tokens of the timed steps / their total time. The phase split is measured on CPU only
    (it would need a synchronisation per phase on CUDA): prepare (TRL moving inputs), forward
    + loss (TRL: with its metrics), backward + clip, optimizer (step, scheduler, zero_grad),
    rest (ours: `step_metrics`).

Peak memory (each side in its own process)
    CPU: right before the first timed step, `gc.collect()` + `malloc_trim(0)`, then "5" to
    /proc/self/clear_refs resets VmHWM; extra peak = VmHWM after the last timed step - VmRSS at
    the reset. Also reported: the RSS after setup and the absolute peak (this is where a
    reference model kept in memory shows). CUDA: `reset_peak_memory_stats()` at the same
    point, extra peak = `max_memory_allocated()` - `memory_allocated()` at the reset.

Target (from the issue)
    ours >= 1.5x TRL's tokens/s at no more extra peak memory; the script checks it against
    both TRL modes and says so. Exit status 1 when a worker failed (not when the target is
    missed: this is a measurement).

Output
    A table on stdout and JSON at `--out` (default `benchmarks/results/train_step-<device>.json`,
    `train_step-<device>-<model>.json` for other models than tiny) with every step's time,
    tokens and loss per side, the checks, versions of both environments, the load average
    and the CPU time other processes used during each side's timed steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from measure import cpu_model, gpu_slug, run_json_worker, worker_env  # beside this script
from reporting import print_peak_methods, save_report
from train_step_data import HH_RLHF, load_rows, prepare_rows, resolve_model
from train_step_report import (
    SIDE_LABELS,
    TARGET_SPEEDUP,
    build_checks,
    render_checks,
    render_phases,
    render_table,
    summarise,
)
from train_step_sides import RESULT_PREFIX, versions, worker_main

SIDES = ("ours", "trl-ref", "trl-precomputed")
DEFAULT_TRL_PYTHON = Path("/tmp/trl-env/bin/python")
DEFAULT_STEPS = {"tiny": 50}  # any other model: 4 (SmolLM2: ~6-11 s a step on 2 cores)
REPO = Path(__file__).resolve().parent.parent


def default_trl_python() -> str | None:
    if importlib.util.find_spec("trl") is not None:
        return sys.executable
    return str(DEFAULT_TRL_PYTHON) if DEFAULT_TRL_PYTHON.exists() else None


def run_worker(
    python: str, spec: dict[str, Any], env: dict[str, str], timeout_s: float
) -> dict[str, Any]:
    """One fresh worker process; its result dict (status ok/oom/failed)."""
    command = [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    load_before = os.getloadavg()
    result = run_json_worker(command, RESULT_PREFIX, timeout_s=timeout_s, env=env, cwd=REPO)
    if result["status"] == "timeout":
        result["status"] = "failed"
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def device_info(device: str, trl_python: str | None, load_start: Sequence[float]) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "versions_ours": versions(),
        "trl_python": trl_python,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": [round(x, 2) for x in load_start],
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", default="tiny", help="tiny (built here), smollm2, or a checkpoint directory"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"HH-RLHF or prompt/chosen/rejected JSONL (default {HH_RLHF} if present)",
    )
    parser.add_argument("--synthetic", action="store_true", help="synthetic rows, no data file")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="weights, both sides"
    )
    parser.add_argument("--sides", default=",".join(SIDES), help=f"subset of {','.join(SIDES)}")
    parser.add_argument("--batch-size", type=int, default=4, help="preference pairs per step")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-prompt-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (50 tiny, else 4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--learning-rate", type=float, default=5e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-python", default=None, help="interpreter with trl installed")
    parser.add_argument("--worker-timeout", type=float, default=900.0, help="seconds per side")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="prepare data, run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return args
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(args.sides) - set(SIDES))
    if unknown:
        parser.error(f"unknown sides {unknown}; choose from {', '.join(SIDES)}")
    if args.max_prompt_length >= args.max_length - 1:
        parser.error("--max-prompt-length must leave room for a completion in --max-length")
    if args.steps is None:
        args.steps = DEFAULT_STEPS.get(args.model, 4)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1, --warmup at least 0")
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if args.trl_python is None:
        args.trl_python = default_trl_python()
    return args


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings both sides get, recorded as they were given."""
    names = ("batch_size", "max_length", "max_prompt_length", "steps", "warmup")
    names += ("learning_rate", "beta", "dtype", "seed")
    return {name: getattr(args, name) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)

    from rich.console import Console
    from transformers import AutoTokenizer

    console = Console(width=max(160, Console().width))  # 80 when piped: too narrow
    load_start = os.getloadavg()  # 1, 5, 15 min: other work on the machine before we start
    workdir = Path(tempfile.mkdtemp(prefix="train-step-"))
    label, model_dir = resolve_model(args.model, workdir)
    count = args.batch_size * (args.warmup + args.steps)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    source_rows, source = load_rows(args, count)
    rows = prepare_rows(source_rows, tokenizer, count, args.max_length, args.max_prompt_length)
    data = workdir / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    console.print(f"model {label} ({model_dir}); {count} rows from {source} -> {data}")
    slug = "cpu" if args.device == "cpu" else gpu_slug()
    default_name = (
        f"train_step-{slug}.json" if label == "tiny" else f"train_step-{slug}-{label}.json"
    )
    out = args.out or Path("benchmarks/results") / default_name

    env = worker_env(
        REPO,
        EVALHARNESS_CACHE=str(workdir / "cache"),  # reference sums computed afresh, not kept
        HF_DATASETS_CACHE=str(workdir / "hf-datasets"),
        TQDM_DISABLE="1",
    )
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # else evalharness sets one per usable core
    spec_base = {
        "model_dir": str(model_dir),
        "data": str(data),
        "workdir": str(workdir),
        "device": args.device,
        "threads": args.threads,
        **run_settings(args),
    }
    results: list[dict[str, Any]] = []
    for side in args.sides:
        row: dict[str, Any] = {
            "side": side,
            "model": label,
            "batch_size": args.batch_size,
            "steps": args.steps,
        }
        python = sys.executable if side == "ours" else args.trl_python
        if python is None:
            row |= {"status": "skipped", "reason": "no interpreter with trl (--trl-python)"}
        elif args.dry_run:
            row |= {"status": "dry-run", "reason": "dry run"}
        else:
            console.print(f"{SIDE_LABELS[side]} ({python}) ...", end=" ")
            row |= run_worker(python, {**spec_base, "side": side}, env, args.worker_timeout)
            if row["status"] == "ok":
                summarise(row)
                console.print(
                    f"{row['median_step_s']:.3f} s/step, {row['tokens_per_s']:.0f} tokens/s, "
                    f"+{row['extra_peak_mib']:.1f} MiB"
                )
            else:
                console.print(f"[red]{row['status']}[/red]: {row.get('reason')}")
        results.append(row)

    by_side = {row["side"]: row for row in results}
    checks = build_checks(by_side)
    info = device_info(args.device, args.trl_python, load_start)
    trl_row = next((r for r in results if r["side"] != "ours" and r["status"] == "ok"), None)
    info["versions_trl_env"] = trl_row["versions"] if trl_row else None
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    threads = next((r["threads"] for r in results if r.get("threads")), None)
    where = info.get("gpu") or f"{info['cpu_model']}, {threads} torch threads"
    title = (
        f"DPO step on {where}: {label}, batch {args.batch_size} pairs, max_length "
        f"{args.max_length}, median of {args.steps} steps after {args.warmup} warm-up"
    )
    console.print(render_table(results, title))
    if args.device == "cpu" and any(r.get("phase_s") for r in results):
        console.print(render_phases(results))
    if checks:
        console.print(render_checks(checks))
        for check in checks:
            console.print(
                f"vs {SIDE_LABELS[check['versus']]}: ours is {check['throughput_ratio']:.2f}x its "
                f"throughput (target {TARGET_SPEEDUP:g}x) with "
                f"{check['ours_extra_peak_mib']:.1f} vs {check['trl_extra_peak_mib']:.1f} MiB "
                f"extra peak: target {'MET' if check['passed'] else 'NOT met'}"
            )
    print_peak_methods(console, results)
    report = {
        "benchmark": "train_step",
        "settings": {
            "model": label,
            "model_dir": str(model_dir),
            "data": source,
            "rows": count,
            **run_settings(args),
            "target_speedup": TARGET_SPEEDUP,
        },
        "device": info,
        "results": results,
        "checks": checks,
    }
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    during = "side(s)' timed steps"
    if not save_report(console, out, report, results, dry_run=args.dry_run, during=during):
        return 0
    failed = [r for r in results if r["status"] in ("failed", "oom")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
