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
import contextlib
import importlib.util
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from measure import (  # beside this script
    cpu_seconds,
    fmt,
    proc_status_kib,
    reset_peak_rss,
    run_json_worker,
    trim_heap,
)

RESULT_PREFIX = "TRAIN_STEP_RESULT "
SIDES = ("ours", "trl-ref", "trl-precomputed")
SIDE_LABELS = {
    "ours": "ours",
    "trl-ref": "TRL ref-per-step",
    "trl-precomputed": "TRL precomputed",
}
HH_RLHF = Path("/work/shared/data/hh_rlhf/harmless_base_test_first2000.jsonl")
ASSISTANT = "\n\nAssistant:"
DEFAULT_TRL_PYTHON = Path("/tmp/trl-env/bin/python")
DEFAULT_STEPS = {"tiny": 50}  # any other model: 4 (SmolLM2: ~6-11 s a step on 2 cores)
TARGET_SPEEDUP = 1.5
VERSION_PACKAGES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "trl")
MIB = 1024**2
REPO = Path(__file__).resolve().parent.parent
_WORD_TEXT = (
    "the a of and to in is it that was for on are with as they be at one have this from "
    "water river city capital question answer explain why because better worse good bad "
    "people time day number sound long make thing see look more could come first find"
)
WORDS = tuple(_WORD_TEXT.split())  # synthetic dialogues when no data file is present


# --------------------------------------------------------------------------- worker side
# Standard library and torch only at module level: the TRL worker runs in another environment.


class StepClock:
    """Per-step wall times, phase marks and the memory peak over the timed steps.

    `begin(step)` / `end()` bracket one optimizer step; `mark(phase)` closes a phase of the
    current step (CPU only). At the first timed step the peak counters are reset.
    """

    def __init__(self, warmup: int, cuda: bool) -> None:
        import torch

        self.torch = torch
        self.warmup = warmup
        self.cuda = cuda
        self.times: list[float] = []
        self.phases: list[dict[str, float]] = []
        self.memory: dict[str, Any] = {}
        self._start = self._last = 0.0
        self._phases: dict[str, float] = {}
        self._timed = False
        self._cpu_before: tuple[float, float] | None = None

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def begin(self, step: int) -> None:
        self._timed = step >= self.warmup
        if step == self.warmup:
            self._reset_peak()
            self._cpu_before = cpu_seconds()
        self.sync()
        self._start = self._last = time.perf_counter()
        self._phases = {}

    def mark(self, phase: str) -> None:
        if self.cuda:
            return
        now = time.perf_counter()
        self._phases[phase] = self._phases.get(phase, 0.0) + now - self._last
        self._last = now

    def end(self) -> None:
        self.sync()
        now = time.perf_counter()
        if not self._timed:
            return
        self.times.append(now - self._start)
        if not self.cuda:
            self._phases["rest"] = self._phases.get("rest", 0.0) + now - self._last
            self.phases.append(self._phases)

    def _reset_peak(self) -> None:
        trim_heap()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            self.memory["baseline_mib"] = self.torch.cuda.memory_allocated() / MIB
            self.memory["peak_method"] = "torch.cuda.max_memory_allocated"
            return
        if reset_peak_rss():
            self.memory["peak_method"] = "VmHWM after clear_refs=5"
        else:
            self.memory["peak_method"] = "ru_maxrss fallback (clear_refs not writable)"
        self.memory["baseline_mib"] = proc_status_kib("VmRSS") / 1024

    def finish(self) -> dict[str, Any]:
        """Timing and memory fields of the result."""
        result: dict[str, Any] = dict(self.memory)
        if self.cuda:
            peak = self.torch.cuda.max_memory_allocated() / MIB
        elif result.get("peak_method", "").startswith("VmHWM"):
            peak = proc_status_kib("VmHWM") / 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["peak_mib"] = peak
        result["extra_peak_mib"] = peak - result.get("baseline_mib", peak)
        cpu_after = cpu_seconds()
        others = None
        if self._cpu_before is not None and cpu_after is not None and self.times:
            spent = (cpu_after[0] - self._cpu_before[0]) - (cpu_after[1] - self._cpu_before[1])
            others = round(max(0.0, spent) / max(sum(self.times), 1e-9), 2)
        result["other_processes_cores"] = others
        result["step_s"] = self.times
        if self.phases:
            names = sorted({name for phases in self.phases for name in phases})
            result["phase_s"] = {
                name: statistics.median(p.get(name, 0.0) for p in self.phases) for name in names
            }
        return result


def configure_torch(spec: dict[str, Any]) -> Any:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    return torch


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Our trainer's DPO step, the loop body of `Trainer.run()`, timed step by step."""
    torch = configure_torch(spec)
    from transformers import get_scheduler

    from evalharness.trainers.config import TrainConfig
    from evalharness.trainers.loop import Trainer
    from evalharness.trainers.models import PolicyScorer

    total = spec["warmup"] + spec["steps"]
    config = TrainConfig(
        method="dpo",
        model=f"hf:{spec['model_dir']}",
        data=spec["data"],
        out=str(Path(spec["workdir"]) / "ours-out"),
        loss_args={"beta": spec["beta"]},
        learning_rate=spec["learning_rate"],
        max_steps=total,
        batch_size=spec["batch_size"],
        max_length=spec["max_length"],
        max_prompt_length=spec["max_prompt_length"],
        max_grad_norm=1.0,
        dtype=spec.get("dtype", "float32"),
        # As TRL's side (bf16=False, tf32 left at PyTorch's IEEE default): the trainer's own
        # CUDA defaults (bf16 autocast, TF32) would time other arithmetic than TRL's.
        mixed_precision="no",
        tf32=False,
        seed=spec["seed"],
    )
    started = time.perf_counter()
    trainer = Trainer(config, progress=False)
    accelerator = trainer.accelerator
    device = accelerator.device
    scorer = PolicyScorer(trainer.model)
    parameters = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=total)
    scorer, optimizer, scheduler = accelerator.prepare(scorer, optimizer, scheduler)
    scorer.train()
    size = config.batch_size
    batches = []
    for step in range(total):
        indices = list(range(step * size, (step + 1) * size))
        batch = trainer.train_data.batch(indices, trainer.kl_rows)
        batches.append({k: v.to(device) for k, v in batch.items()})
    setup_s = time.perf_counter() - started

    cuda = device.type == "cuda"
    clock = StepClock(spec["warmup"], cuda)
    losses: list[float] = []
    for step, batch in enumerate(batches):
        clock.begin(step)
        with accelerator.accumulate(scorer):
            loss, inputs = trainer.compute_loss(scorer, batch, "train")
            clock.mark("forward+loss")
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            clock.mark("backward+clip")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            clock.mark("optimizer")
        record = trainer.step_metrics(loss, inputs)  # what run() logs every step
        clock.end()
        losses.append(record["loss"])
    result = clock.finish()
    timed = batches[spec["warmup"] :]
    result.update(
        setup_s=setup_s,
        device=str(device),
        threads=torch.get_num_threads(),
        losses=losses,
        tokens=[int(b["attention_mask"].sum()) for b in timed],
        padded_tokens=[int(b["attention_mask"].numel()) for b in timed],
        optimizer=f"{type(optimizer.optimizer).__name__} (torch.optim)",
        rss_after_setup_mib=None if cuda else result.get("baseline_mib"),
        train_rows=len(trainer.train_data),
        attn_implementation=trainer.model.config._attn_implementation,
    )
    return result


def run_trl(spec: dict[str, Any], precompute: bool) -> dict[str, Any]:
    """TRL's DPOTrainer with a callback timing each optimizer step."""
    torch = configure_torch(spec)
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    cuda = spec["device"] == "cuda"
    total = spec["warmup"] + spec["steps"]
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line]
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = getattr(torch, spec.get("dtype", "float32"))
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=dtype)
    args = DPOConfig(
        output_dir=str(Path(spec["workdir"]) / f"trl-out-{int(precompute)}"),
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=total,
        beta=spec["beta"],
        loss_type=["sigmoid"],
        max_length=spec["max_length"],
        precompute_ref_log_probs=precompute,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not cuda,
        report_to=[],
        logging_strategy="no",
        logging_steps=1_000_000,
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        seed=spec["seed"],
    )
    clock = StepClock(spec["warmup"], cuda)
    record: dict[str, list] = {"losses": [], "tokens": [], "padded": []}

    class Timed(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            clock.mark("prepare")
            mask = inputs["attention_mask"]
            record["tokens"].append(int(mask.sum()))
            record["padded"].append(int(mask.numel()))
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            record["losses"].append(float((loss[0] if return_outputs else loss).detach()))
            clock.mark("forward+loss")
            return loss

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.begin(state.global_step)

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            clock.mark("backward+clip")

        def on_step_end(self, args, state, control, **kwargs):
            clock.mark("optimizer")
            clock.end()

    trainer = Timed(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    setup_s = time.perf_counter() - started
    trainer.train()
    result = clock.finish()
    warmup = spec["warmup"]
    optimizer = trainer.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)
    fused = any(group.get("fused") for group in inner.param_groups)
    optim_name = getattr(args.optim, "value", args.optim)
    result.update(
        setup_s=setup_s,
        device=str(trainer.accelerator.device),
        threads=torch.get_num_threads(),
        losses=record["losses"],
        tokens=record["tokens"][warmup:],
        padded_tokens=record["padded"][warmup:],
        optimizer=f"{type(inner).__name__} ({optim_name}, fused={fused})",
        rss_after_setup_mib=None if cuda else result.get("baseline_mib"),
        train_rows=len(trainer.train_dataset),
        attn_implementation=model.config._attn_implementation,
        trl_version=trl.__version__,
        reference_model_in_memory=trainer.ref_model is not None,
    )
    return result


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        if spec["side"] == "ours":
            result = run_ours(spec)
        else:
            result = run_trl(spec, precompute=spec["side"] == "trl-precomputed")
        result = {"status": "ok", **result, "versions": package_versions()}
    except Exception as exc:  # reported as a row, not a crash of the whole benchmark
        import traceback

        traceback.print_exc()
        oom = "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"
        status = "oom" if oom else "failed"
        result = {"status": status, "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def package_versions() -> dict[str, str | None]:
    import importlib.metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


# --------------------------------------------------------------------------- driver side


def resolve_model(name: str, workdir: Path) -> tuple[str, Path]:
    """(label, checkpoint directory) for `tiny`, `smollm2` or a local directory."""
    if name == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_models import build_tiny_chat_model

        return "tiny", build_tiny_chat_model(workdir / "tiny-model")
    if name == "smollm2":
        from evalharness.backends import default_model

        return "smollm2", default_model.converted_dir()
    path = Path(name.removeprefix("hf:")).expanduser()
    if not path.is_dir():
        raise SystemExit(f"--model {name}: not tiny, smollm2 or a checkpoint directory")
    return path.name, path.resolve()


def split_dialogue(text: str) -> tuple[str, str] | None:
    """HH-RLHF dialogue -> (prompt up to and including the last "Assistant:", completion)."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        return None
    return text[: cut + len(ASSISTANT)], text[cut + len(ASSISTANT) :]


def hh_rows(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "prompt" in record:  # explicit prompt/chosen/rejected rows
            rows.append({key: record[key] for key in ("prompt", "chosen", "rejected")})
            continue
        chosen, rejected = split_dialogue(record["chosen"]), split_dialogue(record["rejected"])
        if chosen is None or rejected is None or chosen[0] != rejected[0]:
            continue
        if not chosen[1].strip() or not rejected[1].strip() or chosen[1] == rejected[1]:
            continue
        rows.append({"prompt": chosen[0], "chosen": chosen[1], "rejected": rejected[1]})
    return rows


def synthetic_rows(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    rows = []
    for _ in range(count):
        prompt = f"\n\nHuman: {sentence(30, 60)}?{ASSISTANT} {sentence(10, 30)}."
        prompt += f"\n\nHuman: {sentence(20, 40)}?{ASSISTANT}"
        rows.append(
            {
                "prompt": prompt,
                "chosen": f" {sentence(20, 60)}.",
                "rejected": f" {sentence(20, 60)}.",
            }
        )
    return rows


def cut_text(tokenizer: Any, text: str, budget: int, keep_end: bool) -> str:
    """`text` cut to at most `budget` tokens (its end or its start), re-checked after decoding."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = budget
    while len(ids) > budget and keep > 0:
        ids = ids[len(ids) - keep :] if keep_end else ids[:keep]
        text = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        keep -= 1  # a cut inside a character can re-encode longer: cut one more
    return text if len(ids) <= budget else ""  # "" drops the row


def prepare_rows(
    rows: list[dict[str, str]], tokenizer: Any, count: int, max_length: int, max_prompt: int
) -> list[dict[str, str]]:
    """The first `count` rows, cut so that no trainer has to truncate (see the docstring)."""
    prompt_budget = max_prompt - 1
    completion_budget = max_length - max_prompt - 1
    prepared = []
    for row in rows:
        cut = {
            "prompt": cut_text(tokenizer, row["prompt"], prompt_budget, keep_end=True),
            "chosen": cut_text(tokenizer, row["chosen"], completion_budget, keep_end=False),
            "rejected": cut_text(tokenizer, row["rejected"], completion_budget, keep_end=False),
        }
        usable = cut["prompt"].strip() and cut["chosen"].strip() and cut["rejected"].strip()
        if usable and cut["chosen"] != cut["rejected"]:
            prepared.append(cut)
        if len(prepared) == count:
            break
    if len(prepared) < count:
        raise SystemExit(f"only {len(prepared)} usable rows, {count} needed")
    return prepared


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


def summarise(row: dict[str, Any]) -> None:
    """Median s/step and tokens/s from a worker's per-step lists."""
    times = row["step_s"]
    row["median_step_s"] = statistics.median(times)
    row["tokens_per_step"] = statistics.mean(row["tokens"]) if row["tokens"] else None
    row["tokens_per_s"] = sum(row["tokens"]) / sum(times) if times else None


def build_checks(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """ours vs each TRL mode: throughput ratio, memory, same tokens, loss agreement."""
    ours = rows.get("ours")
    checks = []
    for side in ("trl-ref", "trl-precomputed"):
        trl = rows.get(side)
        if not ours or not trl or ours["status"] != "ok" or trl["status"] != "ok":
            continue
        ratio = ours["tokens_per_s"] / trl["tokens_per_s"]
        losses = list(zip(ours["losses"], trl["losses"], strict=False))
        check = {
            "versus": side,
            "throughput_ratio": ratio,
            "step_time_ratio": trl["median_step_s"] / ours["median_step_s"],
            "ours_extra_peak_mib": ours["extra_peak_mib"],
            "trl_extra_peak_mib": trl["extra_peak_mib"],
            "ours_peak_mib": ours["peak_mib"],
            "trl_peak_mib": trl["peak_mib"],
            "same_tokens": ours["tokens"] == trl["tokens"],
            "max_abs_loss_diff": max((abs(a - b) for a, b in losses), default=None),
            "speed_met": ratio >= TARGET_SPEEDUP,
            "memory_met": ours["extra_peak_mib"] <= trl["extra_peak_mib"],
        }
        check["passed"] = check["speed_met"] and check["memory_met"]
        checks.append(check)
    return checks


def render_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    columns = ["side", "model", "batch", "steps", "median s/step", "tokens/step", "tokens/s"]
    columns += ["extra peak MiB", "peak MiB", "setup s", "ours/this tok/s", "note"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("side", "model", "note") else "right")
    ours = next((r for r in rows if r["side"] == "ours" and r["status"] == "ok"), None)
    for row in rows:
        ok = row["status"] == "ok"
        ratio = None
        if ok and ours is not None and row is not ours:
            ratio = ours["tokens_per_s"] / row["tokens_per_s"]
        note = "" if ok else f"{row['status']}: {row.get('reason', '')}"
        if ok and (row.get("other_processes_cores") or 0.0) > 0.2:
            note = f"busy: others used {row['other_processes_cores']:.2f} cores"
        table.add_row(
            SIDE_LABELS[row["side"]],
            row["model"],
            str(row["batch_size"]),
            str(row["steps"]),
            fmt(row.get("median_step_s"), ".3f") if ok else "-",
            fmt(row.get("tokens_per_step"), ".0f") if ok else "-",
            fmt(row.get("tokens_per_s"), ".0f") if ok else "-",
            fmt(row.get("extra_peak_mib"), ".1f") if ok else "-",
            fmt(row.get("peak_mib"), ".0f") if ok else "-",
            fmt(row.get("setup_s"), ".1f") if ok else "-",
            fmt(ratio, ".2f", "x"),
            note,
        )
    return table


def render_phases(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="median seconds per phase of a timed step (CPU)")
    phases = ["prepare", "forward+loss", "backward+clip", "optimizer", "rest"]
    table.add_column("side")
    for phase in phases:
        table.add_column(phase, justify="right")
    for row in rows:
        split = row.get("phase_s")
        if row["status"] == "ok" and split:
            table.add_row(SIDE_LABELS[row["side"]], *(fmt(split.get(p), ".3f") for p in phases))
    return table


def render_checks(checks: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    title = f"target: ours >= {TARGET_SPEEDUP:g}x TRL tokens/s at no more extra peak memory"
    table = Table(title=title)
    columns = ["versus", "tok/s ratio", "ours extra MiB", "TRL extra MiB", "same tokens"]
    columns += ["max |loss diff|", "speed", "memory", "result"]
    for column in columns:
        table.add_column(column, justify="left" if column == "versus" else "right")
    verdict = {True: "[green]met[/green]", False: "[red]not met[/red]"}
    for check in checks:
        table.add_row(
            SIDE_LABELS[check["versus"]],
            f"{check['throughput_ratio']:.2f}x",
            f"{check['ours_extra_peak_mib']:.1f}",
            f"{check['trl_extra_peak_mib']:.1f}",
            "yes" if check["same_tokens"] else "NO",
            fmt(check["max_abs_loss_diff"], ".1e"),
            verdict[check["speed_met"]],
            verdict[check["memory_met"]],
            verdict[check["passed"]],
        )
    return table


def device_info(device: str, trl_python: str | None, load_start: Sequence[float]) -> dict[str, Any]:
    import torch

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "device": device,
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "versions_ours": package_versions(),
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


def load_rows(args: argparse.Namespace, count: int) -> tuple[list[dict[str, str]], str]:
    data = args.data or (HH_RLHF if HH_RLHF.exists() and not args.synthetic else None)
    if data is None:
        return synthetic_rows(count * 4, args.seed), "synthetic"
    return hh_rows(data), str(data)


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
    slug = "cpu" if args.device == "cpu" else device_slug()
    default_name = (
        f"train_step-{slug}.json" if label == "tiny" else f"train_step-{slug}-{label}.json"
    )
    out = args.out or Path("benchmarks/results") / default_name

    env = dict(os.environ)
    env.update(
        EVALHARNESS_CACHE=str(workdir / "cache"),  # reference sums computed afresh, not kept
        HF_DATASETS_CACHE=str(workdir / "hf-datasets"),
        HF_HUB_OFFLINE="1",
        TQDM_DISABLE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
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
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "max_prompt_length": args.max_prompt_length,
        "steps": args.steps,
        "warmup": args.warmup,
        "learning_rate": args.learning_rate,
        "beta": args.beta,
        "threads": args.threads,
        "seed": args.seed,
        "dtype": args.dtype,
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
    methods = sorted({r["peak_method"] for r in results if r.get("peak_method")})
    if methods:
        console.print(f"peak memory measured by: {'; '.join(methods)}")
    report = {
        "benchmark": "train_step",
        "settings": {
            "model": label,
            "model_dir": str(model_dir),
            "data": source,
            "rows": count,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "max_prompt_length": args.max_prompt_length,
            "steps": args.steps,
            "warmup": args.warmup,
            "learning_rate": args.learning_rate,
            "beta": args.beta,
            "dtype": args.dtype,
            "seed": args.seed,
            "target_speedup": TARGET_SPEEDUP,
        },
        "device": info,
        "results": results,
        "checks": checks,
    }
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.dry_run:
        console.print(f"dry run: nothing measured, {out} not written")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")
    busy = [r for r in results if (r.get("other_processes_cores") or 0.0) > 0.2]
    if busy:
        console.print(
            f"[yellow]warning: other processes used CPU during {len(busy)} side(s)' timed steps "
            "(other_processes_cores); those times are unreliable[/yellow]"
        )
    failed = [r for r in results if r["status"] in ("failed", "oom")]
    return 1 if failed else 0


def device_slug() -> str:
    import torch

    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


if __name__ == "__main__":
    sys.exit(main())
