"""`make test-gpu`: the GPU tests and benchmarks in one prepared run of under 8 minutes.

A rented or shared GPU machine is often held for minutes at a time, bare, without network: this
script is all that runs there, in one call, so none of that time goes on assembling commands.
Run from the repository root::

    python benchmarks/gpu_suite.py            # on a CUDA machine (after `make gpu-wheels` here)
    python benchmarks/gpu_suite.py --smoke    # tiny shapes on the CPU: what CI runs

Steps, in order (each in processes of its own, each with its own time limit; one failing or
running out of time is recorded and the next one still runs)

    setup       install the carried wheels (.whl/, from `make gpu-wheels`) into a target folder
                put first on PYTHONPATH, then the project itself (editable, no dependencies,
                offline) when the interpreter cannot import it; record the versions, the card.
    models      build the benchmark model on the device: a Llama-3.2-1B-shaped decoder
                (16 layers, hidden 2048, GQA 32/8 heads, vocabulary 128256, tied head, bf16,
                random weights, seed 0) with the tests' locally trained tokenizer
                (tests/tiny_models.py). Nothing can be downloaded there; the tokenizer knows
                400 of the 128256 ids, which is enough to feed real text in and to score it,
                and generation lengths are forced, so speed is that of a real 1B model.
    tests       `pytest -m gpu` over GPU_TEST_FILES: the compiled Triton kernel against the
                float64 reference (forward and backward, both backward schedules, fp32 and
                bf16), an `hf:` model on cuda against the CPU (per-token log-prob differences,
                recorded; identical identity), `serve` on cuda, training and GRPO on cuda, the
                live-model fingerprint on the device. Not the interpreted kernel test modules:
                they set TRITON_INTERPRET=1 when imported.
    kernel      benchmarks/scoring.py --device cuda --quick: fused kernel vs naive, Liger, CCE.
    generation  benchmarks/vllm_generation.py: MT-Bench-style chat prompts, `hf:` vs `vllm:`
                tokens/s, every prompt forced to the full length (vLLM: a reason when absent).
    mc_scoring  benchmarks/mc_scoring.py: multiple-choice questions/s, evalharness vs lm-eval's
                HFLM (both at batch size auto), their per-question acc and per-request
                log-probs, on the same model; `goal_met` says whether ours reached 1.5x.
    dpo         benchmarks/train_step.py: one DPO step, ours vs TRL's DPOTrainer (reference per
                step and precomputed), steps/s and peak memory, bf16, same model and batches.

Time budget (estimated for one H100; the total is capped at --budget, default 470 s, so the
suite ends inside the device tool's 10-minute command limit with time to copy results back)

    setup        60 s limit, ~25 s expected: 39 small wheels unpacked, one editable install.
    models       60 s limit, ~20 s: 1.24e9 parameters initialised on the GPU, 2.5 GB written.
    tests       150 s limit, ~90 s: pytest start-up, Triton compiling the kernel variants
                (~10 s each), tiny models on both devices, a server, train steps.
    kernel      150 s limit, ~120 s: scoring.py's --quick grid, one process per (path, shape,
                mode) at D = 4096, V = 128256 (~5 s of imports each plus the timed runs).
    generation   60 s limit, ~30 s: load 2.5 GB (~5 s), warm up, 32 prompts x 128 tokens in
                one batch (~128 decoding steps of ~15 ms); vLLM adds ~60 s when it is there.
    mc_scoring   90 s limit, ~45 s: two processes (lm-eval's import ~10 s each), 400 questions
                x 4 choices scored in float32 (~0.2 PFLOP each side).
    dpo         150 s limit, ~100 s: three processes (ours, TRL ref-per-step, TRL precomputed),
                each loading the model and scoring the reference, 2 + 10 steps of 4 pairs.

    Expected ~7 min; the limits add up to 12 min, so a step that runs long is cut by the
    total cap (its reason says so) and the remaining steps are recorded as skipped.

Output
    One JSON summary, gpu_suite.json, and one log, gpu_suite.log (every step's output), in
    $OUT when it is set (the device tool returns that folder), else benchmarks/results/gpu/.
    The summary has the mode and device, the versions and the card, the models used and one
    entry per step: status (ok, failed, timeout, skipped), reason, seconds, its limit and the
    step's own JSON result. It is rewritten after every step, so a run cut short keeps what
    finished.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gpu_suite_context import LOG, REPO, SUMMARY, Step, StepFailed, StepRun, StepTimeout, Suite, now
from gpu_suite_machine import build_model, probe_versions
from gpu_suite_steps import STEPS

DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu"
DEFAULT_BUDGET_S = 470.0
#: A step is not started with less than this left of the total budget.
MIN_STEP_S = 10.0


def run_step(suite: Suite, step: Step, deadline: float, args: argparse.Namespace) -> dict:
    """One step's summary entry: its result, or why it has none (never an exception)."""
    entry: dict[str, Any] = {"status": "skipped", "reason": None, "budget_s": step.budget_s}
    left = deadline - time.monotonic()
    setup = suite.summary["steps"].get("setup", {}).get("status")
    if args.steps and step.name not in args.steps:
        entry["reason"] = "not selected (--steps)"
    elif step.name != "setup" and setup in ("failed", "timeout"):
        entry["reason"] = "setup failed: nothing else can run"
    elif step.needs_model and suite.model is None:
        entry["reason"] = "no model: the models step did not build one"
    elif left < MIN_STEP_S:
        entry["reason"] = f"the suite's {args.budget:.0f} s budget was spent"
    else:
        limit = min(step.budget_s, left)
        print(f"[gpu_suite] {step.name} (limit {limit:.0f} s) ...", flush=True)
        context = StepRun(suite, step.name, limit)
        start = time.monotonic()
        try:
            result = step.run(context, limit)
            entry.update(status=result.pop("status", "ok"), reason=result.pop("reason", None))
            entry["result"] = result
        except StepTimeout as exc:
            cut = " (cut by the suite's total budget)" if limit < step.budget_s else ""
            entry.update(status="timeout", reason=f"{exc}{cut}")
        except Exception as exc:  # recorded; the other steps still run
            reason = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            entry.update(status="failed", reason=reason.splitlines()[0])
        entry["seconds"] = round(time.monotonic() - start, 1)
        with open(suite.log, "a") as log, contextlib.suppress(OSError):
            log.write(f"\n########## {step.name}: {entry['status']}\n")
            log.write(context.log.read_text())
        print(f"[gpu_suite] {step.name}: {entry['status']} {entry['reason'] or ''}", flush=True)
    return entry


def run_suite(args: argparse.Namespace) -> int:
    """setup and models first; then the rest, one after another on a GPU (their timings must
    not share the card) and side by side in smoke mode (CPU timings mean nothing there, and
    CI's check of the script waits half as long)."""
    suite = Suite(args)
    suite.out.mkdir(parents=True, exist_ok=True)
    suite.log.write_text(f"gpu_suite {suite.summary['mode']} run, {now()}\n")
    deadline = time.monotonic() + args.budget
    first, rest = STEPS[:2], STEPS[2:]
    for step in first:
        suite.summary["steps"][step.name] = run_step(suite, step, deadline, args)
        suite.write()
    workers = len(rest) if suite.smoke else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {step.name: pool.submit(run_step, suite, step, deadline, args) for step in rest}
        for step in rest:  # the summary keeps the steps' order
            suite.summary["steps"][step.name] = futures[step.name].result()
            suite.write()
    suite.summary["finished_at"] = now()
    suite.summary["wall_s"] = round(args.budget - (deadline - time.monotonic()), 1)
    suite.write()
    if not args.keep:
        shutil.rmtree(suite.work, ignore_errors=True)  # the 2.5 GB model among it
    print(f"[gpu_suite] wrote {suite.out / SUMMARY} and {suite.log}", flush=True)
    bad = [n for n, e in suite.summary["steps"].items() if e["status"] in ("failed", "timeout")]
    return 1 if bad else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=os.environ.get("GPU_SUITE_DEVICE") == "cpu",
        help="tiny shapes on the CPU (also GPU_SUITE_DEVICE=cpu): the same steps and JSON",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT,
        help=f"folder for {SUMMARY} and {LOG} (default $OUT, else {DEFAULT_OUT})",
    )
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="total seconds")
    parser.add_argument("--steps", type=lambda t: t.split(","), help="a subset, comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (models)")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build-model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.steps or ()) - {s.name for s in STEPS}
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {[s.name for s in STEPS]}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe is not None:
        probe_versions(args.probe)
        return 0
    if args.build_model is not None:
        build_model(args.build_model, args.smoke)
        return 0
    return run_suite(args)


if __name__ == "__main__":
    sys.exit(main())
