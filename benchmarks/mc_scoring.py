"""Multiple-choice log-likelihood scoring: evalharness versus `lm_eval --model hf`, questions/s.

Run from the repository root (lm-eval installed; the GPU suite runs it with a built model)::

    python benchmarks/mc_scoring.py [--model smollm2|hf:PATH] [--device cuda] [--dtype float32]
        [--questions 400] [--lm-eval-batch-size auto] [--ours-batch-size auto] [--threads 2]
        [--before TREE]

What is compared
    One lm-eval task YAML (`multiple_choice`, `acc`) over `--questions` generated questions of
    four choices each, written to a temporary folder. lm-eval runs it with its own `HFLM`
    (`simple_evaluate(model=HFLM(...))`, batch size `auto` by default, as `lm_eval --model hf
    --batch_size auto` does); evalharness runs the same YAML folder as a task
    (`evaluate(spec, tasks=[folder])`), which builds the same requests through lm-eval and
    scores them with its own `hf` backend (the fused scoring kernel on CUDA). Both load the
    same checkpoint in the same dtype on the same device.

    Each side runs in its own process. The model is loaded and warmed up (one forward pass;
    ours also one scoring call, which compiles the kernel) before the clock starts, so the
    time is one whole evaluation call: building the task from the YAML, scoring every choice
    and computing acc. lm-eval's automatic batch size search happens inside its first scoring
    call and is counted: it is what `--batch_size auto` costs on every run.

    `--threads N` sets both sides' torch threads (the CPU comparison uses 2). `--before TREE`
    adds a third side, `ours-before`: the same evaluation with the package imported from
    another checkout of this repository (e.g. `git archive` of an older commit), so a change to
    the scoring path is checked against the code it replaces on the same requests.

Agreement
    Every request's log-probability and is_greedy are compared across the sides (`requests`:
    the largest difference, the is_greedy mismatches); lm-eval's come from its logged samples.
    The per-question `acc` of the two must be identical (same requests, same model). In
    bfloat16 lm-eval takes the log-softmax of bf16 logits while evalharness accumulates in
    float32, so near-tied choices can differ; float32 (the default) makes the check exact
    up to kernel rounding. Mismatching questions are listed.

Output
    A table on stdout and JSON at `--out` (default benchmarks/results/mc_scoring.json): each
    side's seconds, questions/s and per-question acc counts, the ratio, the agreement.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from measure import (
    cpu_seconds,
    machine_info,
    other_processes_cores,
    print_worker_result,
    run_json_worker,
    worker_env,
)
from reporting import write_json

RESULT_PREFIX = "MC_SCORING_RESULT "
TASK = "speed_mc"
SIDES = ("lm-eval", "ours")
BEFORE = "ours-before"
#: What the comparison must reach: ours / lm-eval questions/s on the CPU and on a GPU.
GOALS = {"cpu": 1.0, "cuda": 1.5}
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("benchmarks/results/mc_scoring.json")
# Words the tests' tiny tokenizer was trained on, so its questions encode into few tokens.
_WORD_TEXT = (
    "the water river city capital question answer explain why because better worse good bad "
    "people time day number sound long make thing see look more could come first find cat dog"
)
WORDS = tuple(_WORD_TEXT.split())
YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}?\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
"""


def write_task(folder: Path, questions: int, seed: int) -> Path:
    """The YAML and its JSONL data: `questions` rows of 4 distinct choices, seeded."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for _ in range(questions):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
        choices: list[str] = []
        while len(choices) < 4:
            choice = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            if choice not in choices:
                choices.append(choice)
        rows.append({"question": question, "choices": choices, "answer": rng.randrange(4)})
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / f"{TASK}.yaml").write_text(YAML.format(task=TASK, data=data))
    return folder


def resolve_model(model: str) -> Path:
    """The checkpoint directory: `smollm2` is the default model (converted once, cached)."""
    if model == "smollm2":
        from evalharness.backends.default_model import converted_dir

        return converted_dir()
    return Path(model.removeprefix("hf:")).resolve()


# --------------------------------------------------------------------------- worker side


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def set_threads(spec: dict[str, Any]) -> None:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))


def request_key(context: str, continuation: str) -> str:
    return json.dumps([context, continuation])


def lm_eval_scores(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """request -> [log-prob, is_greedy] from lm-eval's logged samples (one response each)."""
    scores = {}
    for sample in samples:
        for arguments, response in zip(sample["arguments"], sample["resps"], strict=True):
            if isinstance(arguments, dict):  # {"gen_args_0": {"arg_0": ..., "arg_1": ...}}
                arguments = list(arguments.values())
                arguments = [arguments[0]["arg_0"], arguments[0]["arg_1"]]
            logprob, greedy = response[0]
            scores[request_key(*arguments)] = [float(logprob), bool(greedy)]
    return scores


def run_lm_eval(spec: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's HFLM on the task, the evaluation call timed."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    set_threads(spec)
    batch = spec["lm_eval_batch_size"]
    lm = HFLM(
        pretrained=spec["model_dir"],
        dtype=spec["dtype"],
        device=spec["device"],
        batch_size=batch if batch == "auto" else int(batch),
    )
    with torch.no_grad():  # warm-up: CUDA context, cuBLAS handles, first kernels
        lm.model(torch.tensor([[1, 2, 3]], device=lm.device))
    sync(spec["device"])
    manager = TaskManager(include_path=spec["task_dir"], include_defaults=False)
    cpu_before, start = cpu_seconds(), time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[TASK], task_manager=manager, log_samples=True, verbosity="ERROR"
    )
    sync(spec["device"])
    seconds = time.perf_counter() - start
    busy = other_processes_cores(cpu_before, cpu_seconds(), seconds)
    assert results is not None
    acc = {str(s["doc_id"]): float(s["acc"]) for s in results["samples"][TASK]}
    return {
        "seconds": seconds,
        "acc": acc,
        "scores": lm_eval_scores(results["samples"][TASK]),
        "other_processes_cores": busy,
        # "auto": what its search settled on, per length schedule.
        "batch_size": f"{batch} {getattr(lm, 'batch_sizes', '')}".strip(),
        "model_device": str(lm.device),
        "model_dtype": str(lm.model.dtype).removeprefix("torch."),
        "version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
    }


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """evalharness on the same YAML folder, with its hf backend loaded and warmed up first."""
    from evalharness import evaluate
    from evalharness.backends import load_backend
    from evalharness.backends.spec import parse_model_spec
    from evalharness.engine.requests import ScoreRequest
    from evalharness.store.run_store import RunStore

    set_threads(spec)
    model_spec = parse_model_spec(
        f"hf:{spec['model_dir']}",
        dtype=spec["dtype"],
        batch_size=batch if (batch := spec["ours_batch_size"]) == "auto" else int(batch),
        device=spec["device"],
    )
    backend = load_backend(model_spec)
    backend.score([ScoreRequest(continuation=" water", context="Question: why?\nAnswer:")])
    scores: dict[str, list[Any]] = {}
    score = backend.score
    counts = {"score_calls": 0, "forwards": 0}
    backend._decoder().register_forward_pre_hook(  # type: ignore[attr-defined]
        lambda *_: counts.__setitem__("forwards", counts["forwards"] + 1)
    )

    def recording(requests: Any) -> Any:  # the answers, kept for the per-request comparison
        counts["score_calls"] += 1
        results = score(requests)
        for request, result in zip(requests, results, strict=True):
            scores[request_key(request.context, request.continuation)] = [
                result.logprob,
                result.is_greedy,
            ]
        return results

    backend.score = recording  # type: ignore[method-assign]
    sync(spec["device"])
    store = Path(spec["workdir"]) / f"{spec['side']}.sqlite"  # no side reads the cache of another
    cpu_before, start = cpu_seconds(), time.perf_counter()
    result = evaluate(
        model_spec, tasks=[spec["task_dir"]], store=store, runner_options={"use_backend": backend}
    )
    sync(spec["device"])
    seconds = time.perf_counter() - start
    busy = other_processes_cores(cpu_before, cpu_seconds(), seconds)
    task = next(iter(result.raw["tasks"]))
    samples = RunStore(store).get_samples(result.run_id, task)
    model = backend.model  # type: ignore[attr-defined]
    return {
        "seconds": seconds,
        "acc": {s["sample_id"]: float(s["scores"]["acc"]) for s in samples},
        "scores": scores,
        "other_processes_cores": busy,
        "batch_size": str(spec["ours_batch_size"]),
        "model_device": str(model.device),
        "model_dtype": str(model.dtype).removeprefix("torch."),
        "calls_made": result.raw.get("calls_made"),
        **counts,  # backend calls and model forwards inside the timed evaluation
    }


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    run = run_lm_eval if spec["side"] == "lm-eval" else run_ours
    # A failure is a row, not a crash: the other side's numbers still count.
    return print_worker_result(RESULT_PREFIX, lambda: run(spec), oom=False)


# --------------------------------------------------------------------------- driver side


def compare(sides: dict[str, dict[str, Any]], questions: int) -> dict[str, Any]:
    """Questions/s of each side, ours ÷ lm-eval, and the per-question agreement of acc."""
    for row in sides.values():
        if row["status"] == "ok":
            row["questions"] = len(row["acc"])
            row["questions_per_s"] = row["questions"] / row["seconds"]
            row["mean_acc"] = sum(row["acc"].values()) / max(1, len(row["acc"]))
    theirs, ours = sides.get("lm-eval", {}), sides.get("ours", {})
    summary: dict[str, Any] = {"ratio_ours_vs_lm_eval": None, "identical_acc": None}
    if theirs.get("status") == "ok" and ours.get("status") == "ok":
        summary["ratio_ours_vs_lm_eval"] = ours["questions_per_s"] / theirs["questions_per_s"]
        shared = sorted(set(theirs["acc"]) & set(ours["acc"]), key=int)
        differ = [q for q in shared if theirs["acc"][q] != ours["acc"][q]]
        summary.update(
            questions_compared=len(shared),
            same_questions=len(shared) == questions == len(ours["acc"]) == len(theirs["acc"]),
            acc_mismatches=len(differ),
            mismatched_questions=differ[:20],
            identical_acc=not differ and len(shared) == questions,
        )
    summary["requests"] = {
        f"ours vs {other}": compare_requests(ours, sides[other])
        for other in ("lm-eval", BEFORE)
        if other in sides and ours.get("status") == sides[other].get("status") == "ok"
    }
    for row in sides.values():  # per-question values are in the comparison, not repeated
        row.pop("acc", None)
        row.pop("scores", None)
    return summary


def compare_requests(ours: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The same requests' log-probs and is_greedy, side by side: the largest difference and
    the requests whose is_greedy differs (or that one side did not score)."""
    mine, theirs = ours.get("scores", {}), other.get("scores", {})
    shared = sorted(set(mine) & set(theirs))
    diffs = [abs(mine[k][0] - theirs[k][0]) for k in shared]
    greedy = [k for k in shared if mine[k][1] != theirs[k][1]]
    return {
        "compared": len(shared),
        "only_one_side": len(set(mine) ^ set(theirs)),
        "max_abs_logprob_diff": max(diffs, default=None),
        "is_greedy_mismatches": len(greedy),
        "is_greedy_mismatched": [json.loads(k) for k in greedy[:10]],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", default="smollm2", help="hf:PATH of a local checkpoint, or smollm2 (default)"
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (both sides)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--lm-eval-batch-size", default="auto", help="'auto' or a number")
    parser.add_argument("--ours-batch-size", default="auto", help="'auto' or a number")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, both sides")
    parser.add_argument("--before", type=Path, help="another checkout: adds the ours-before side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker-timeout", type=float, default=600.0, help="seconds per side")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if args.model != "smollm2" and not Path(args.model.removeprefix("hf:")).is_dir():
            parser.error("--model must be smollm2 or hf:PATH of a local checkpoint directory")
        if args.ours_batch_size != "auto" and not args.ours_batch_size.isdigit():
            parser.error("--ours-batch-size must be 'auto' or a number")
        if args.questions < 1:
            parser.error("--questions must be at least 1")
        if args.before is not None and not (args.before / "evalharness").is_dir():
            parser.error(f"--before {args.before}: no evalharness package there")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    model_dir = str(resolve_model(args.model))
    workdir = Path(tempfile.mkdtemp(prefix="mc-scoring-"))
    task_dir = write_task(workdir / "task", args.questions, args.seed)
    env = worker_env(REPO, HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(workdir / "hf-datasets"))
    base = {
        "model_dir": model_dir,
        "task_dir": str(task_dir),
        "workdir": str(workdir),
        "device": args.device,
        "dtype": args.dtype,
        "lm_eval_batch_size": args.lm_eval_batch_size,
        "ours_batch_size": args.ours_batch_size,
        "threads": args.threads,
    }
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    sides: dict[str, dict[str, Any]] = {}
    for side in (*SIDES, BEFORE) if args.before else SIDES:
        print(f"{side}: {args.questions} questions x 4 choices ...", flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        spec = {**base, "side": side}
        side_env = env
        if side == BEFORE:  # the older code: its own package first, batch sizes it knows
            side_env = {**env, "PYTHONPATH": f"{args.before.resolve()}:{env['PYTHONPATH']}"}
            spec["ours_batch_size"] = (
                64 if args.ours_batch_size == "auto" else spec["ours_batch_size"]
            )
        command.append(json.dumps(spec))
        sides[side] = run_json_worker(
            command, RESULT_PREFIX, timeout_s=args.worker_timeout, env=side_env, cwd=REPO
        )
    summary = compare(sides, args.questions)
    device_type = args.device.partition(":")[0]
    summary["goal_ratio"] = GOALS.get(device_type)
    ratio = summary["ratio_ours_vs_lm_eval"]
    summary["goal_met"] = (
        None if ratio is None or device_type not in GOALS else ratio >= GOALS[device_type]
    )
    for side, row in sides.items():
        if row["status"] == "ok":
            print(
                f"{side:8} {row['seconds']:8.2f} s  {row['questions_per_s']:9.1f} questions/s  "
                f"batch {row['batch_size']}  on {row['model_device']} ({row['model_dtype']}); "
                f"other processes used {row['other_processes_cores']} cores meanwhile"
                + (
                    f"; {row['score_calls']} backend calls, {row['forwards']} forwards"
                    if "forwards" in row
                    else ""
                )
            )
        else:
            print(f"{side:8} {row['status']}: {row.get('reason')}")
    if summary["ratio_ours_vs_lm_eval"] is not None:
        print(
            f"ours / lm-eval: {summary['ratio_ours_vs_lm_eval']:.2f}x questions/s; identical "
            f"per-question acc: {summary['identical_acc']} ({summary['acc_mismatches']} differ); "
            f"goal {summary['goal_ratio']}x met: {summary['goal_met']}"
        )
    for pair, row in summary["requests"].items():
        print(
            f"{pair}: {row['compared']} requests, max |logprob diff| "
            f"{row['max_abs_logprob_diff']}, is_greedy mismatches {row['is_greedy_mismatches']}"
        )
    report = {
        "benchmark": "mc_scoring",
        "model": model_dir,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "lm_eval_batch_size": args.lm_eval_batch_size,
        "ours_batch_size": args.ours_batch_size,
        "questions": args.questions,
        "choices": 4,
        "sides": sides,
        **summary,
        "machine": machine_info(),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if all(row["status"] == "ok" for row in sides.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
