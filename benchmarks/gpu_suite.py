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
                HFLM (batch size auto), and their per-question acc, on the same model.
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
import glob
import json
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from measure import machine_info, run_process  # beside this script

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
SITE = Path(tempfile.gettempdir()) / "gpu-suite-site"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu"
SUMMARY = "gpu_suite.json"
LOG = "gpu_suite.log"
DEFAULT_BUDGET_S = 470.0
#: A step is not started with less than this left of the total budget.
MIN_STEP_S = 10.0
#: What a benchmark's own driver process needs of its step's limit beside its workers.
DRIVER_S = 10.0
VERSION_PACKAGES = (
    "torch",
    "triton",
    "transformers",
    "accelerate",
    "peft",
    "tokenizers",
    "datasets",
    "evalharness",
    "lm_eval",
    "trl",
    "liger-kernel",
    "cut-cross-entropy",
    "vllm",
)

#: The benchmark model: Llama-3.2-1B's shape (what `models` builds on a GPU).
LLAMA_1B = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
}


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: float
    run: Callable[[StepRun, float], dict[str, Any]]
    needs_model: bool = False


class StepFailed(Exception):
    """A step's one-line reason for not producing its result."""


class StepTimeout(StepFailed):
    pass


class Suite:
    """The run's settings, its environment for child processes and its summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.smoke: bool = args.smoke
        self.device = "cpu" if args.smoke else "cuda"
        self.out: Path = args.out
        self.work = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
        self.log = self.out / LOG
        self.python = sys.executable
        self.env = dict(os.environ)
        self.env.update(
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            HF_DATASETS_CACHE=str(self.work / "hf-datasets"),
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            TQDM_DISABLE="1",
            EVALHARNESS_STORE=str(self.work / "store.sqlite"),
        )
        self.env.pop("TRITON_INTERPRET", None)  # the compiled kernel is what is measured
        self.model: dict[str, Any] | None = None
        self.summary: dict[str, Any] = {
            "suite": "gpu_suite",
            "mode": "smoke" if self.smoke else "gpu",
            "device": self.device,
            "started_at": now(),
            "budget_s": args.budget,
            "machine": machine_info(),
            "steps": {},
        }

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / SUMMARY).write_text(json.dumps(self.summary, indent=2) + "\n")


class StepRun:
    """One step's view of the suite: its own copy of the environment and its own log file,
    appended to the suite's log when the step ends (smoke mode runs steps side by side)."""

    def __init__(self, suite: Suite, name: str, limit: float) -> None:
        self.suite = suite
        self.deadline = time.monotonic() + limit
        self.smoke = suite.smoke
        self.device = suite.device
        self.python = suite.python
        self.work = suite.work
        self.env = dict(suite.env)
        self.log = suite.work / f"{name}.log"

    def run(self, command: Sequence[str], label: str, cwd: Path = REPO) -> int:
        """A child process in the step's environment, stopped at the step's deadline; its
        output goes to the step's log."""
        timeout_s = max(1.0, self.deadline - time.monotonic())
        with open(self.log, "a") as log:
            log.write(f"\n===== {label}: {' '.join(command)}\n")
        code, _, _ = run_process(command, timeout_s=timeout_s, env=self.env, cwd=cwd, log=self.log)
        if code is None:
            raise StepTimeout(f"{label} did not finish within its {timeout_s:.0f} s")
        return code

    def model_dir(self) -> str:
        assert self.suite.model is not None
        return self.suite.model["dir"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path, label: str) -> dict[str, Any]:
    if not path.exists():
        raise StepFailed(f"{label} wrote no result ({path.name}); see {LOG}")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- steps


def step_setup(step: StepRun, limit: float) -> dict[str, Any]:
    """Carried wheels and the project, installed offline; then what the machine has."""
    result: dict[str, Any] = {}
    wheels = sorted(glob.glob(str(REPO / ".whl" / "*.whl")))
    if step.smoke:
        result["wheels"] = "not installed: smoke mode runs in the project's environment as it is"
    elif not wheels:
        result["wheels"] = "none: no .whl/ here (make gpu-wheels, then carry .whl)"
    else:
        command = [step.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        command += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE)]
        if step.run([*command, *wheels], "install wheels") != 0:
            raise StepFailed(f"pip could not install the {len(wheels)} wheels; see {LOG}")
        result["wheels"] = [Path(w).name for w in wheels]
        path = os.pathsep.join(filter(None, [str(SITE), step.env.get("PYTHONPATH")]))
        step.env["PYTHONPATH"] = step.suite.env["PYTHONPATH"] = path  # every later step too
    # Outside the checkout: there `import evalharness` would find the folder, not the package.
    check = [step.python, "-c", "import evalharness.tasks"]
    if step.run(check, "import check", cwd=step.work) == 0:
        result["project"] = "already importable"
    else:
        command = [step.python, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        command += ["--no-build-isolation", "-e", str(REPO)]
        if step.run(command, "install project") != 0:
            raise StepFailed(f"the editable install of the project failed; see {LOG}")
        result["project"] = "installed editable, without dependencies"
    probe = step.work / "versions.json"
    code = step.run([step.python, __file__, "--probe", str(probe)], "versions")
    if code != 0:
        raise StepFailed(f"the version probe failed; see {LOG}")
    result.update(read_json(probe, "the version probe"))
    return result


def probe_versions(path: Path) -> None:
    """Versions of what the steps use, the card, and whether vLLM imports at all."""
    import importlib.metadata

    import torch

    found: dict[str, Any] = {"python": sys.version.split()[0]}
    for name in VERSION_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    if found["vllm"] != "not installed":
        try:
            import vllm  # noqa: F401
        except Exception as exc:  # a broken vLLM is as good as none here
            found["vllm"] = f"installed, import fails: {type(exc).__name__}"
    cuda = torch.cuda.is_available()
    record = {
        "versions": found,
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": (
            round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None
        ),
    }
    path.write_text(json.dumps(record, indent=2))


def step_models(step: StepRun, limit: float) -> dict[str, Any]:
    target = step.work / "models"
    mode = ["--smoke"] if step.smoke else []
    code = step.run([step.python, __file__, "--build-model", str(target), *mode], "model")
    if code != 0:
        raise StepFailed(f"building the model failed (exit {code}); see {LOG}")
    step.suite.model = read_json(target / "model.json", "the model build")
    return step.suite.model


def build_model(target: Path, smoke: bool) -> None:
    """The benchmark model in `target`: the tests' tiny chat model in smoke mode, else the
    Llama-3.2-1B-shaped random model (built on the GPU, saved in bf16)."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import build_tiny_chat_model, build_tokenizer

    target.mkdir(parents=True, exist_ok=True)
    if smoke:
        directory = build_tiny_chat_model(target / "tiny-chat")
        description = {
            "name": "tiny-chat",
            "what": "tests/tiny_models.py: 2-layer Llama, hidden 64, vocabulary 400, float32",
            "weights": "random, seeded",
            "dtype": "float32",
            "parameters": None,
        }
    else:
        import torch
        from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

        tokenizer = build_tokenizer()
        config = LlamaConfig(
            **LLAMA_1B,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            dtype="bfloat16",
        )
        torch.manual_seed(0)
        with torch.device("cuda"):  # initialised where it is fast: ~1 s instead of ~1 min
            model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        directory = target / "llama-3.2-1b-shape-random"
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        description = {
            "name": directory.name,
            "what": (
                "Llama-3.2-1B-shaped decoder built from a config: "
                + ", ".join(f"{k}={v}" for k, v in LLAMA_1B.items())
                + "; the tests' tokenizer (400 tokens, tests/tiny_models.py)"
            ),
            "weights": "random (transformers' init, seed 0), not trained",
            "dtype": "bfloat16",
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    description["dir"] = str(directory)
    (target / "model.json").write_text(json.dumps(description, indent=2))


#: The files holding `gpu`-marked tests; none of them sets TRITON_INTERPRET=1 when imported (the
#: interpreted kernel tests do), and the compiled-kernel file runs its checks in a fresh process.
GPU_TEST_FILES = (
    "tests/test_gpu.py",
    "tests/test_kernels_gpu.py",
    "tests/test_model_placement.py",
    "tests/test_training_devices.py",
    "tests/test_weights_fingerprint.py",
)


def step_tests(step: StepRun, limit: float) -> dict[str, Any]:
    junit = step.work / "tests.xml"
    record = step.work / "tests-record.json"
    step.env["EVALHARNESS_GPU_RECORD"] = str(record)
    command = [step.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    command += ["-rs", *GPU_TEST_FILES, f"--junitxml={junit}"]
    code = step.run(command, "pytest -m gpu")
    if not junit.exists():
        raise StepFailed(f"pytest exited {code} before writing its report; see {LOG}")
    result = {"exit_code": code, **junit_outcomes(junit)}
    result["measured"] = json.loads(record.read_text()) if record.exists() else {}
    if result["failed"]:
        result["status"] = "failed"
        result["reason"] = f"{result['failed']} GPU test(s) failed"
    return result


def junit_outcomes(path: Path) -> dict[str, Any]:
    """Counts and one line per test (outcome and, for a skip or failure, its message)."""
    tests = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag != "skipped" else "skipped"
                message = (child.get("message") or child.text or "").strip().splitlines()[:1]
                message = message[0][:300] if message else None
        tests.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0),
                "message": message,
            }
        )
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "skipped")}
    return {**counts, "tests": tests}


def scoring_options(step: StepRun) -> list[str]:
    """scoring.py's arguments: its --quick grid on a GPU, tiny shapes in smoke mode."""
    if not step.smoke:
        return ["--quick"]
    options = ["--n", "256", "--d", "64", "--v", "2048", "--paths", "chunked"]
    return options + ["--mode", "forward", "--repeats", "1"]


def step_kernel(step: StepRun, limit: float) -> dict[str, Any]:
    out = step.work / "kernel.json"
    command = [step.python, str(BENCH / "scoring.py"), "--device", step.device]
    command += [*scoring_options(step), "--json", str(out)]
    code = step.run(command, "kernel benchmark")
    result = read_json(out, "scoring.py")
    result["exit_code"] = code
    return result


def side_timeout(limit: float, sides: int) -> str:
    """`--worker-timeout` for a benchmark whose sides run one after another: their limits and
    the driver's share fit in the step's, so a side that runs long is recorded as such and the
    other sides keep their numbers (rather than the step being cut with none)."""
    return f"{max(1.0, (limit - DRIVER_S) / sides):.0f}"


def step_generation(step: StepRun, limit: float) -> dict[str, Any]:
    out = step.work / "generation.json"
    size = ["4", "8", "4"] if step.smoke else ["32", "128", "32"]
    command = [
        step.python,
        str(BENCH / "vllm_generation.py"),
        "--model",
        f"hf:{step.model_dir()}",
    ]
    command += ["--prompts", size[0], "--max-new-tokens", size[1], "--hf-batch-size", size[2]]
    code = step.run([*command, "--out", str(out)], "generation benchmark")
    if code != 0:
        raise StepFailed(f"vllm_generation.py exited {code}; see {LOG}")
    return read_json(out, "vllm_generation.py")


def step_mc_scoring(step: StepRun, limit: float) -> dict[str, Any]:
    out = step.work / "mc_scoring.json"
    command = [step.python, str(BENCH / "mc_scoring.py"), "--model", f"hf:{step.model_dir()}"]
    command += ["--device", step.device, "--dtype", "float32"]
    command += ["--worker-timeout", side_timeout(limit, 2)]  # lm-eval, then ours
    if step.smoke:
        command += ["--questions", "8", "--lm-eval-batch-size", "4", "--ours-batch-size", "4"]
    else:
        command += ["--questions", "400"]
    code = step.run([*command, "--out", str(out)], "multiple-choice benchmark")
    result = read_json(out, "mc_scoring.py")
    if code != 0:
        result["status"], result["reason"] = "failed", "a side failed (see sides)"
    return result


def step_dpo(step: StepRun, limit: float) -> dict[str, Any]:
    out = step.work / "dpo.json"
    command = [step.python, str(BENCH / "train_step.py"), "--model", step.model_dir()]
    command += ["--device", step.device, "--synthetic", "--batch-size", "4"]
    if step.smoke:  # TRL's import alone costs ~15 s on two cores: CI checks our side only
        command += ["--steps", "2", "--warmup", "1", "--sides", "ours"]
    else:
        command += ["--dtype", "bfloat16", "--steps", "10", "--warmup", "2"]
    sides = 1 if step.smoke else 3
    command += ["--worker-timeout", side_timeout(limit, sides), "--out", str(out)]
    code = step.run(command, "DPO step benchmark")
    result = read_json(out, "train_step.py")
    if step.smoke:
        result["results"] += [
            {"side": side, "status": "skipped", "reason": "smoke mode: TRL sides run on a GPU only"}
            for side in ("trl-ref", "trl-precomputed")
        ]
    if code != 0:
        result["status"], result["reason"] = "failed", "a side failed (see results)"
    return result


STEPS = (
    Step("setup", 60, step_setup),
    Step("models", 60, step_models),
    Step("tests", 150, step_tests),
    Step("kernel", 150, step_kernel),
    Step("generation", 60, step_generation, needs_model=True),
    Step("mc_scoring", 90, step_mc_scoring, needs_model=True),
    Step("dpo", 150, step_dpo, needs_model=True),
)


# --------------------------------------------------------------------------- driver


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
