"""Multiple-choice log-likelihood requests, evalharness's `hf` backend vs lm-eval's `HFLM`,
timed turn by turn in one process.

Run from the repository root (lm-eval installed)::

    python benchmarks/mc_requests.py [--model smollm2|hf:PATH] [--questions 40] [--threads 2]
        [--repeats 3] [--lm-eval-batch-size 8] [--ours-batch-size auto] [--device cpu]

`mc_scoring.py` times whole evaluations, one process per side, one after the other; on a
shared machine the load can change between the two. This script times only the scoring of
the same requests (`mc_scoring.py`'s questions: "Question: ...?\\nAnswer:" and " " + each of
four choices), `HFLM.loglikelihood` and our `backend.score`, alternating the two `--repeats`
times, so both see the same load; the median of each side counts. Both models are loaded and
warmed up before the clock starts; lm-eval's automatic batch size search, when asked for, is
inside its timed calls.

Printed: seconds, questions/s of each side, ours / lm-eval, the largest per-request log-prob
difference and is_greedy mismatches, and how many cores other processes used meanwhile. JSON at
`--out` (default benchmarks/results/mc_requests.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mc_scoring import resolve_model, write_task
from measure import cpu_seconds, machine_info, other_processes_cores
from reporting import write_json

DEFAULT_OUT = Path("benchmarks/results/mc_requests.json")


def requests_of(questions: int, seed: int) -> list[tuple[str, str]]:
    """(context, continuation) for every choice of `mc_scoring.py`'s questions."""
    import json

    folder = write_task(Path(tempfile.mkdtemp(prefix="mc-requests-")), questions, seed)
    rows = [json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines()]
    return [(f"Question: {r['question']}?\nAnswer:", " " + c) for r in rows for c in r["choices"]]


def sides(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> dict[str, Callable[[], Any]]:
    """Each side's scoring of `pairs`, as a call returning [(log-prob, is_greedy)]."""
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evalharness.backends import load_backend
    from evalharness.backends.spec import parse_model_spec
    from evalharness.engine.requests import ScoreRequest

    model_dir = str(resolve_model(args.model))
    batch = args.lm_eval_batch_size
    lm = HFLM(
        pretrained=model_dir,
        dtype=args.dtype,
        device=args.device,
        batch_size=batch if batch == "auto" else int(batch),
    )
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(pairs)
    ]
    ours_batch = args.ours_batch_size
    spec = parse_model_spec(
        f"hf:{model_dir}",
        dtype=args.dtype,
        device=args.device,
        batch_size=ours_batch if ours_batch == "auto" else int(ours_batch),
    )
    backend = load_backend(spec)
    requests = [ScoreRequest(context=c, continuation=t) for c, t in pairs]
    with torch.no_grad():  # warm-up of both: first kernels, our packing check
        lm.loglikelihood(instances[:4], disable_tqdm=True)
        backend.score(requests[:4])

    def ours() -> list[tuple[float, bool]]:
        return [(r.logprob, r.is_greedy) for r in backend.score(requests)]

    def theirs() -> list[tuple[float, bool]]:
        return [(float(lp), bool(g)) for lp, g in lm.loglikelihood(instances, disable_tqdm=True)]

    return {"lm-eval": theirs, "ours": ours}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lm-eval-batch-size", default="8")
    parser.add_argument("--ours-batch-size", default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    pairs = requests_of(args.questions, args.seed)
    calls = sides(args, pairs)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    busy: dict[str, list[float | None]] = {name: [] for name in calls}
    answers: dict[str, Any] = {}
    for _ in range(max(1, args.repeats)):
        for name, call in calls.items():
            before, start = cpu_seconds(), time.perf_counter()
            answers[name] = call()
            took = time.perf_counter() - start
            seconds[name].append(took)
            busy[name].append(other_processes_cores(before, cpu_seconds(), took))
    rows = {}
    for name in calls:
        median = statistics.median(seconds[name])
        rows[name] = {
            "seconds": seconds[name],
            "median_s": median,
            "questions_per_s": args.questions / median,
            "other_processes_cores": busy[name],
        }
        print(
            f"{name:8} {median:8.2f} s  {args.questions / median:8.2f} questions/s  "
            f"(runs {', '.join(f'{s:.2f}' for s in seconds[name])}; other processes used "
            f"{busy[name]} cores)"
        )
    ours, theirs = answers["ours"], answers["lm-eval"]
    diff = max(abs(a[0] - b[0]) for a, b in zip(ours, theirs, strict=True))
    greedy = sum(a[1] != b[1] for a, b in zip(ours, theirs, strict=True))
    ratio = rows["ours"]["questions_per_s"] / rows["lm-eval"]["questions_per_s"]
    print(f"ours / lm-eval: {ratio:.2f}x questions/s")
    print(f"{len(pairs)} requests: max |logprob diff| {diff:.2e}, is_greedy mismatches {greedy}")
    write_json(
        args.out,
        {
            "benchmark": "mc_requests",
            "model": str(resolve_model(args.model)),
            "device": args.device,
            "dtype": args.dtype,
            "threads": args.threads,
            "questions": args.questions,
            "requests": len(pairs),
            "lm_eval_batch_size": args.lm_eval_batch_size,
            "ours_batch_size": args.ours_batch_size,
            "sides": rows,
            "ratio_ours_vs_lm_eval": ratio,
            "max_abs_logprob_diff": diff,
            "is_greedy_mismatches": greedy,
            "machine": machine_info(),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
