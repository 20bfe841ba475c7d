"""The steps of benchmarks/gpu_suite.py, in order: setup, models, tests and the four
benchmarks. Each runs its commands through its `StepRun` (environment, log, deadline) and
returns its JSON result, or raises `StepFailed` with a one-line reason.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from gpu_suite_context import BENCH, LOG, REPO, SCRIPT, Step, StepFailed, StepRun, read_json

SITE = Path(tempfile.gettempdir()) / "gpu-suite-site"
#: What a benchmark's own driver process needs of its step's limit beside its workers.
DRIVER_S = 10.0


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
    code = step.run([step.python, str(SCRIPT), "--probe", str(probe)], "versions")
    if code != 0:
        raise StepFailed(f"the version probe failed; see {LOG}")
    result.update(read_json(probe, "the version probe"))
    return result


def step_models(step: StepRun, limit: float) -> dict[str, Any]:
    target = step.work / "models"
    mode = ["--smoke"] if step.smoke else []
    code = step.run([step.python, str(SCRIPT), "--build-model", str(target), *mode], "model")
    if code != 0:
        raise StepFailed(f"building the model failed (exit {code}); see {LOG}")
    step.suite.model = read_json(target / "model.json", "the model build")
    return step.suite.model


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
    else:  # both sides at batch size auto: the 1.5x goal on a GPU is against lm-eval's auto
        command += ["--questions", "400", "--lm-eval-batch-size", "auto"]
        command += ["--ours-batch-size", "auto"]
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
