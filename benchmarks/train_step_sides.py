"""The two sides benchmarks/train_step.py times, each in a worker process of its own: our
trainer's DPO step (the body of `Trainer.run()`) and TRL's DPOTrainer, with the step clock that
times both the same way.

Standard library, torch and `measure` only at module level: the TRL side runs in another
environment, which has transformers, datasets and trl but nothing of this project.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from measure import (  # beside this script
    PeakMemory,
    cpu_seconds,
    other_processes_cores,
    package_versions,
    print_worker_result,
)

RESULT_PREFIX = "TRAIN_STEP_RESULT "
VERSION_PACKAGES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "trl")


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
        self.peak = PeakMemory(cuda, "ru_maxrss fallback (clear_refs not writable)")
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
            self.peak.start()
            self.memory = {"peak_method": self.peak.method, "baseline_mib": self.peak.baseline_mib}
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

    def finish(self) -> dict[str, Any]:
        """Timing and memory fields of the result."""
        result: dict[str, Any] = dict(self.memory)
        peak = self.peak.peak_mib()
        result["peak_mib"] = peak
        result["extra_peak_mib"] = peak - result.get("baseline_mib", peak)
        others = None
        if self.times:
            others = other_processes_cores(self._cpu_before, cpu_seconds(), sum(self.times))
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

    def run() -> dict[str, Any]:
        if spec["side"] == "ours":
            result = run_ours(spec)
        else:
            result = run_trl(spec, precompute=spec["side"] == "trl-precomputed")
        return {**result, "versions": versions()}

    return print_worker_result(RESULT_PREFIX, run)


def versions() -> dict[str, str | None]:
    """Python's and the training packages' versions in this environment."""
    return {"python": platform.python_version(), **package_versions(VERSION_PACKAGES)}
