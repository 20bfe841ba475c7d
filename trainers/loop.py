"""The one training loop: every method is a loss from the registry over the same log-probs.

Data → tokenised examples → (reference sums, once, cached) → for each batch: one policy forward
through the fused scoring kernel → the loss's keyword inputs → `loss.mean()` → `accelerate`
backward/step (gradient accumulation, multi-GPU and FSDP come from `accelerate launch`).

Several processes (`accelerate launch`, `torchrun`): each trains on its shard of every epoch's
batches (the data loader goes through `accelerator.prepare`), the reference sums are computed by
the main process first and read from its cache by the others, logged metrics are means over the
processes (examples: their sum), and only the main process writes logs and checkpoints.

Around it: `batches` reads, splits and batches the data, `distributed` makes the accelerator
and reduces across processes, `inputs` turns a batch into a loss's keyword tensors, and
`checkpoint` saves the model with the run's metadata.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evalharness.errors import InputError

from . import adapters, distributed, losses, precision
from .batches import Examples, load_splits, read_splits, to_device
from .checkpoint import save_run
from .config import TrainConfig
from .distributed import (
    cpu_only_launch,
    fresh_accelerator,
    mean_over_processes,
    sharded_weights,
    sum_over_processes,
)
from .inputs import (
    binary_inputs,
    pairwise_inputs,
    ranking_inputs,
    reward_model_inputs,
    sft_inputs,
)
from .losses.unpaired import delta_update_values
from .metrics import MetricsLog, RunningMean, preference_metrics, token_metrics
from .models import (
    PolicyScorer,
    adamw,
    adapters_disabled,
    core_model,
    load_model,
    reference_hidden,
)
from .reference import batch_fingerprint, reference_sums

#: Methods whose loss reads the reference's full distribution per token (kept in memory).
PER_TOKEN_REFERENCE = {"asft_anchored"}
#: Training rows CorDA's calibration pass runs (one forward each).
CALIBRATION_ROWS = 16


@dataclass
class TrainSummary:
    """What a finished run reports (and `checkpoint.run_metadata` stores): where it saved,
    optimizer steps, examples seen, seconds, the last step's metrics, held-out metrics."""

    out: Path
    steps: int
    examples: int
    seconds: float
    final: dict[str, float] = field(default_factory=dict)
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)


class Trainer:
    """State of one run: models, data, reference sums, optimizer; `run()` trains and saves."""

    def __init__(self, config: TrainConfig, *, progress: bool = True) -> None:
        from accelerate.utils import set_seed

        self.config = config
        self.progress = progress
        self.method = losses.method(config.method)
        if self.method.data_format == "prompt":
            raise InputError(
                f"method {self.method.name} is online: use trainers.online (generation in the loop)"
            )
        self.hyper = losses.hyperparameters(self.method, config.loss_args)
        # Input options change the sums the loop computes, so they never reach the loss.
        self.options = {name: self.hyper.pop(name) for name in self.method.input_options}
        set_seed(config.seed)
        distributed.check_cpu_launch(cpu_only_launch())
        self.dtype = precision.weights_dtype(config.dtype, config.adapter)
        placement = precision.plan(
            config.device,
            config.mixed_precision,
            self.dtype,
            cpu_launch=cpu_only_launch(),
        )
        self.accelerator = fresh_accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            **placement.accelerator_options(),
        )
        distributed.shard_on_cpu(self.accelerator)
        self._check_sharded_lora()
        self.is_reward_model = self.method.name == "reward"
        splits = read_splits(config, self.method.data_format)
        device = self.accelerator.device
        loaded = load_model(
            config.model,
            self.dtype,
            device=device,
            place=not sharded_weights(self.accelerator),
            sequence_classifier=self.is_reward_model,
            load_in_4bit=config.adapter is not None and config.adapter.load_in_4bit,
        )
        tf32 = precision.use_tf32(device, config.tf32)
        mixed = self.accelerator.mixed_precision
        self.placement = precision.record(device, loaded.identity["dtype"], mixed, tf32)
        precision.warn_if_updates_round_away(loaded.identity["dtype"], config.adapter)
        self.base_identity = loaded.identity
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        train, held = load_splits(config, self.method.data_format, self.tokenizer, splits)
        pad = self.tokenizer.pad_token_id
        self.train_data = Examples(train, self.method.data_format, pad, config.max_length)
        self.eval_data = Examples(held, self.method.data_format, pad, config.max_length)
        self.kl_rows = "policy_kl_logps" in self.method.inputs
        self.initial_adapter: Path | None = None
        if config.adapter is not None:
            self._add_adapter(config.adapter)
        self.ref_model: Any = None
        self.reference: dict[str, dict[str, torch.Tensor]] = {}
        self._prepare_reference(loaded)
        self.delta = RunningMean()

    def _add_adapter(self, settings: Any) -> None:
        """Wrap the policy with the PEFT adapter (peft's config class for `settings.type`).

        AdaLoRA's schedule spans the run's optimizer steps; CorDA calibrates on the first
        training examples; PiSSA-style adapters keep their initial state, from which the saved
        adapter is converted to a plain LoRA on the original base.
        """
        batches = math.ceil(len(self.train_data) / self.config.batch_size)
        steps = planned_steps(self.config, math.ceil(batches / self.accelerator.num_processes))
        self.model = adapters.add_adapter(
            self.model,
            settings.type,
            settings.args,
            task_type="SEQ_CLS" if self.is_reward_model else "CAUSAL_LM",
            total_steps=steps,
            calibration=self._calibrate,
        )
        if adapters.mutates_base(settings.type, settings.args):
            self.initial_adapter = Path(self.config.out) / "adapter-init"
            if self.accelerator.is_main_process:
                adapters.save_initial_adapter(self.model, self.initial_adapter)

    def _calibrate(self, model: Any) -> None:
        """Forward passes over the first training examples, one row each (CorDA's covariance)."""
        device = next(model.parameters()).device
        with torch.no_grad():
            for batch in self.train_data.in_order(1)[:CALIBRATION_ROWS]:
                for key, ids in batch.items():
                    if key.endswith("input_ids"):
                        model(input_ids=ids.to(device))

    # -- reference ------------------------------------------------------------------------
    def _prepare_reference(self, loaded: Any) -> None:
        method = self.method
        if not method.needs_reference:
            return
        ref_model, identity = self._reference_model(loaded)
        if method.name in PER_TOKEN_REFERENCE:
            # Kept for every step; None means "the policy with its adapters disabled".
            self.ref_model = None if ref_model is self.model else ref_model
            return
        scorer = PolicyScorer(ref_model).to(self.accelerator.device)
        disabled = adapters_disabled(self.model) if ref_model is self.model else nullcontext()
        if self.accelerator.mixed_precision != "no":
            # Scored under the policy's autocast, so the sums are not the ones a run without it
            # cached (an identity without this key: the caches of earlier runs stay valid).
            identity = {**identity, "mixed_precision": self.accelerator.mixed_precision}

        def score_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            """The reference's sums, by kind, from the same input functions training uses."""
            batch = to_device(batch, self.accelerator.device)
            if self.method.data_format == "pairwise":
                sums = pairwise_inputs(scorer, batch, None, ld_alpha=self.ld_alpha)
                return {
                    "chosen": sums["policy_chosen_logps"],
                    "rejected": sums["policy_rejected_logps"],
                }
            sums = (
                binary_inputs(scorer, batch, None)
                if "kl_input_ids" in batch
                else sft_inputs(scorer, batch, None)
            )
            out = {"completion": sums["policy_logps"]}
            if "policy_kl_logps" in sums:
                out["kl"] = sums["policy_kl_logps"]
            return out

        size = self.config.batch_size
        # The main process computes and caches the sums; the others then read its cache file.
        with disabled, self.accelerator.main_process_first(), self.accelerator.autocast():
            for name, data in (("train", self.train_data), ("eval", self.eval_data)):
                if len(data):
                    batches = data.in_order(size, self.kl_rows)
                    fingerprint = batch_fingerprint(batches)
                    if self.ld_alpha is not None:  # LD-weighted sums: a cache of their own
                        fingerprint += f"|ld_alpha={self.ld_alpha!r}"
                    self.reference[name] = reference_sums(
                        identity, fingerprint, batches, score_batch
                    )
        if ref_model is not self.model:
            del scorer, ref_model  # the reference is not needed again: free its memory

    @property
    def ld_alpha(self) -> float | None:
        """LD-DPO's weight of the tokens past a pair's shared length (None: plain sums)."""
        return self.options.get("ld_alpha")

    def _reference_model(self, loaded: Any) -> tuple[Any, dict[str, Any]]:
        """A separate frozen model, or the policy itself (an adapter: adapters disabled, unless
        its initialisation rewrote the base weights, as PiSSA's does)."""
        spec = self.config.reference
        adapter = self.config.adapter
        if (
            spec is None
            and adapter is not None
            and not adapters.mutates_base(adapter.type, adapter.args)
        ):
            return self.model, self.base_identity
        if spec is None:
            spec = self.config.model
        ref = load_model(spec, self.dtype, device=self.accelerator.device)
        ref.model.requires_grad_(False)
        return ref.model, ref.identity

    def _lookup(self, split: str) -> Callable[[str, torch.Tensor], torch.Tensor] | None:
        sums = self.reference.get(split)
        if sums is None:
            return None
        device = self.accelerator.device
        return lambda kind, index: sums[kind][index.cpu()].to(device)

    def _check_sharded_lora(self) -> None:
        if self.config.adapter is not None and sharded_weights(self.accelerator):
            raise InputError(
                "PEFT adapters (LoRA and the rest) under FSDP/DeepSpeed are not supported by this "
                "trainer: use configs/accelerate/multi_gpu.yaml (DDP) for adapter runs"
            )

    def _token_mean_over_processes(self, loss: torch.Tensor, inputs: dict) -> torch.Tensor:
        """sft/dft/asft_anchored: the mean over every process's tokens, not a mean of means."""
        if self.method.name not in distributed.TOKEN_MEAN:
            return loss
        tokens = inputs["token_mask"].sum()
        return distributed.global_token_mean(loss, tokens, self.accelerator)

    # -- one batch ------------------------------------------------------------------------
    def loss_inputs(self, scorer: Any, batch: dict[str, torch.Tensor], split: str) -> dict:
        lookup = self._lookup(split)
        fmt = self.method.data_format
        if self.is_reward_model:
            return reward_model_inputs(scorer, batch)
        if fmt == "pairwise":
            full = "policy_chosen_full_logps" in self.method.inputs
            inputs = pairwise_inputs(
                scorer, batch, lookup, full_chosen=full, ld_alpha=self.ld_alpha
            )
        elif fmt == "binary":
            inputs = binary_inputs(scorer, batch, lookup)
        elif fmt == "ranking":
            inputs = ranking_inputs(scorer, batch, lookup)
        else:
            kl_reference = None
            if self.method.name in PER_TOKEN_REFERENCE:
                ref = self.ref_model
                disabled = adapters_disabled(self.model) if ref is None else nullcontext()
                with disabled, self.accelerator.autocast():  # as the policy's forward runs
                    source = self.model if ref is None else ref
                    hidden = reference_hidden(source, batch["input_ids"], batch["attention_mask"])
                kl_reference = (core_model(source), hidden)
            inputs = sft_inputs(scorer, batch, lookup, kl_reference)
        if "delta" in self.method.inputs:
            if split == "train":
                # TRL folds the current batch into the running mean before the loss uses it.
                self._update_delta(inputs)
            inputs["delta"] = torch.tensor(self.delta.mean, device=self.accelerator.device)
        return inputs

    def compute_loss(self, scorer: Any, batch: dict[str, torch.Tensor], split: str) -> tuple:
        inputs = self.loss_inputs(scorer, batch, split)
        wanted = self.method.inputs
        missing = [name for name in self.method.required_inputs if name not in inputs]
        if missing:
            raise InputError(f"method {self.method.name} needs {', '.join(missing)}")
        arguments = {name: inputs[name] for name in wanted if name in inputs}
        per_example = self.method.loss(**arguments, **self.hyper)
        return per_example.mean(), inputs

    def _update_delta(self, inputs: dict[str, torch.Tensor]) -> None:
        """BCO's δ, as TRL's `RunningMoments`: fold in this step's values (`bco`: every row's
        β·r; `bco_pair`: the batch mean, once), summed with their count over processes first
        (TRL's `get_global_statistics`), so every process keeps the same δ."""
        values = delta_update_values(inputs, float(self.hyper.get("beta", 0.1))).float()
        if self.accelerator.num_processes > 1:
            count = torch.tensor([float(values.numel())], device=values.device)
            total = self.accelerator.reduce(
                torch.cat([values.sum().reshape(1), count]), reduction="sum"
            )
            self.delta.add(float(total[0]), int(round(float(total[1]))))
        else:
            self.delta.update(values)

    def step_metrics(self, loss: torch.Tensor, inputs: dict[str, torch.Tensor]) -> dict:
        record = {"loss": float(loss.detach())}
        record.update(preference_metrics(inputs, float(self.hyper.get("beta", 1.0) or 1.0)))
        record.update(token_metrics(inputs))
        if "chosen_rewards" in inputs:
            margin = (inputs["chosen_rewards"] - inputs["rejected_rewards"]).detach()
            record["rewards/margin"] = float(margin.mean())
            record["rewards/accuracy"] = float((margin > 0).float().mean())
        return record

    def evaluate(self, scorer: Any) -> dict[str, float]:
        """Held-out loss and metrics (mean over batches, weighted by examples)."""
        if not len(self.eval_data):
            return {}
        totals: dict[str, float] = {}
        count = 0
        scorer.eval()
        with torch.no_grad():
            for batch in self.eval_data.in_order(self.config.batch_size, self.kl_rows):
                batch = to_device(batch, self.accelerator.device)
                loss, inputs = self.compute_loss(scorer, batch, "eval")
                size = len(batch["index"])
                for key, value in self.step_metrics(loss, inputs).items():
                    totals[key] = totals.get(key, 0.0) + value * size
                count += size
        scorer.train()
        return {f"eval/{k}": v / count for k, v in totals.items()}

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm
        from transformers import get_scheduler

        config, accelerator = self.config, self.accelerator
        out = Path(config.out)
        main = accelerator.is_main_process
        log = MetricsLog(out / "metrics.jsonl") if main else None
        scorer = self.model if self.is_reward_model else PolicyScorer(self.model)
        parameters = [p for p in scorer.parameters() if p.requires_grad]
        optimizer = adamw(parameters, config.learning_rate, config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(
            list(range(len(self.train_data))),
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=lambda indices: self.train_data.batch(list(indices), self.kl_rows),
        )
        raw_optimizer = optimizer
        scorer, optimizer, loader = accelerator.prepare(scorer, optimizer, loader)
        # FSDP2 replaces the parameters by sharded ones (DTensors): clip those the optimizer now
        # holds (accelerate's FSDP clipping compares the list with the model's parameters).
        parameters = [p for p in scorer.parameters() if p.requires_grad]
        # After `prepare`, len(loader) is this process's share of an epoch's batches.
        total = planned_steps(config, len(loader))
        # A prepared scheduler steps once per process per optimizer step (accelerate's
        # convention), so its horizon is counted in process-steps.
        processes = accelerator.num_processes
        scheduler = get_scheduler(
            "linear",
            raw_optimizer,
            num_warmup_steps=int(total * config.warmup_ratio) * processes,
            num_training_steps=total * processes,
        )
        scheduler = accelerator.prepare(scheduler)
        scorer.train()
        eval_before = self.evaluate(scorer)
        if eval_before and log:
            log.write({"step": 0, **eval_before})
        started, step, seen = time.monotonic(), 0, 0
        bar = tqdm(
            total=total, desc=f"train {self.method.name}", disable=not (self.progress and main)
        )
        record: dict[str, float] = {}
        while step < total:
            for batch in loader:
                with accelerator.accumulate(scorer):
                    loss, inputs = self.compute_loss(scorer, batch, "train")
                    loss = self._token_mean_over_processes(loss, inputs)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        adapters.after_optimizer_step(self.model, step)
                    scheduler.step()
                    optimizer.zero_grad()
                seen += len(batch["index"])
                if not accelerator.sync_gradients:
                    continue
                step += 1
                metrics = mean_over_processes(accelerator, self.step_metrics(loss, inputs))
                record = {
                    "step": step,
                    "examples": sum_over_processes(accelerator, seen),
                    **metrics,
                }
                record["lr"] = scheduler.get_last_lr()[0]
                if config.eval_every and step % config.eval_every == 0:
                    record.update(self.evaluate(scorer))
                if log:
                    log.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if config.save_every and step % config.save_every == 0 and step < total:
                    save_run(self, scorer, out / f"step-{step}", final=False)
                if step >= total:
                    break
        bar.close()
        eval_after = self.evaluate(scorer)
        if eval_after and log:
            log.write({"step": step, **eval_after})
        seconds = time.monotonic() - started
        seen = sum_over_processes(accelerator, seen)
        summary = TrainSummary(out, step, seen, seconds, record, eval_before, eval_after)
        save_run(self, scorer, out, final=True, summary=summary)
        return summary


def planned_steps(config: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the run: `max_steps`, else epochs of this process's batches."""
    updates_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    return config.max_steps or max(1, math.ceil(updates_per_epoch * config.epochs))


def train(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """Train `config.method` on `config.data` and write the checkpoint to `config.out`."""
    return Trainer(config, progress=progress).run()
