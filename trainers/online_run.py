"""What every online method's loop shares: setup, the step mechanics, the checkpoint.

GRPO, RLOO, PPO, the online DPO family and GKD differ only in what one step does with its
samples. Loading the policy (and adapters), the frozen reference, the prompts, the sampler, the
reward source, the optimizer, the metrics log and the final checkpoint are the same for all of
them, so they live here once: a method's loop is `start_online_run`, a `for` over
`run.batches()` that calls `run.optimizer_step(loss)` and `run.record(...)`, and
`finish_online_run`.

Policy and reference run on the run's device (`trainers.precision`: the first accelerator
unless `device` says otherwise), sampling and scoring under its autocast; so does the reward
model where model specs name their device (`ModelSpec.device`), else it runs on the host.
The loop is single-process: launched N times it would train N copies writing one checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evalharness.errors import InputError

from . import adapters, precision
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .data import LoadedRows, load_rows, tokenize_rows
from .distributed import fresh_accelerator
from .loop import TrainSummary
from .metrics import MetricsLog
from .models import PolicyScorer, adamw, adapters_disabled, load_model
from .rewards import Rewarder, Rollout, build_rewarder
from .rewards.spec import SPEC_FORMS
from .rollouts import Prompt, Sampler, prompt_messages
from .samplers import build_sampler, choose_rollouts


@dataclass
class OnlineRun:
    """One online run's loaded parts and its step counter (see the module docstring)."""

    config: TrainConfig
    method: Any
    hyper: dict[str, Any]
    tokenizer: Any
    model: Any
    accelerator: Any
    scorer: Any
    parameters: list[Any]
    optimizer: Any
    prompts: list[Prompt]
    sampler: Sampler
    rewarder: Rewarder | None
    total: int
    log: MetricsLog
    identity: dict[str, Any]
    placement: dict[str, Any]
    reference: Any = None
    needs_reference: bool = False
    initial_adapter: Path | None = None
    step: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    bar: Any = None

    @property
    def device(self) -> Any:
        return self.accelerator.device

    def batches(self) -> Iterator[tuple[int, list[Prompt]]]:
        """`(step, prompts)` for each optimizer step: shuffled epochs of `batch_size` prompts,
        seeded, until `total` steps have run."""
        generator = torch.Generator().manual_seed(self.config.seed)
        size = self.config.batch_size
        while self.step < self.total:
            order = torch.randperm(len(self.prompts), generator=generator).tolist()
            for start in range(0, len(order), size):
                if self.step >= self.total:
                    return
                yield self.step, [self.prompts[i] for i in order[start : start + size]]

    def sample_seed(self, offset: int) -> int:
        """A distinct, reproducible seed for the `offset`-th sampling call of this step."""
        return self.config.seed * 1_000_003 + self.step * 1000 + offset

    def rollouts(self, prompt: Prompt, completions: list[list[int]]) -> list[Rollout]:
        """Sampled completions of `prompt` as the reward sees them (decoded text)."""
        decode = self.tokenizer.decode
        return [
            Rollout(prompt.messages, decode(c, skip_special_tokens=True), prompt.row)
            for c in completions
        ]

    def reference_token_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Per-token log-probs under the frozen reference, without gradient (None when the
        run has no reference): the base with adapters disabled, or the separate copy."""
        if not self.needs_reference:
            return None
        arguments = (batch["input_ids"], batch["attention_mask"], batch["labels"])
        with torch.no_grad(), self.accelerator.autocast():
            if self.reference is None:
                with adapters_disabled(self.model):
                    return self.scorer(*arguments)[0]
            return PolicyScorer(self.reference)(*arguments)[0]

    def optimizer_step(self, loss: torch.Tensor, *, last: bool = True) -> None:
        """Backward, clip, step, the adapter's hook, zero the gradients; then count the step
        and sync the sampler, unless more updates of this step's samples follow (`last=False`:
        PPO's epochs over mini-batches, one step per batch of rollouts as TRL counts them)."""
        self.accelerator.backward(loss)
        if self.config.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        adapters.after_optimizer_step(self.model, self.step)
        self.optimizer.zero_grad()
        if last:
            self.step += 1
            self.sampler.sync(self.model)

    def record(self, metrics: dict[str, Any]) -> None:
        """Log the step's metrics (metrics.jsonl) with the reward's counters (e.g. verdicts a
        judge's output did not parse), and show the mean reward on the bar."""
        counts = self.rewarder.stats() if self.rewarder is not None else {}
        self.last = {"step": self.step, **metrics, **{f"reward/{k}": v for k, v in counts.items()}}
        self.log.write(self.last)
        if self.bar is not None:
            self.bar.update(1)
            if "reward/mean" in metrics:
                self.bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}")


def _calibrate(model: Any, prompts: list[Prompt]) -> None:
    """Forward passes over the first prompts, one each (CorDA's covariance)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for prompt in prompts[:16]:
            model(input_ids=torch.tensor([prompt.ids], device=device))


def training_prompts(
    rows: LoadedRows, data_format: str, tokenizer: Any, max_length: int
) -> list[Prompt]:
    """The prompts of `prompt` rows, or of `sft` rows with completions: `prompt` + `completion`,
    or `messages` whose prompt is every turn before the final assistant turns, as TRL's GKD
    collator (`DataCollatorForChatML`) cuts a conversation."""
    options = {"assistant_turns": "last"} if data_format == "sft" else {}
    examples = tokenize_rows(
        list(rows),
        data_format,
        tokenizer,
        max_length=max_length,
        where=list(rows.locations),
        **options,
    )
    return [
        Prompt(prompt_messages(_row_prompt(row)), list(e.prompt_ids), dict(row))
        for e, row in zip(examples, rows, strict=True)
    ]


def _row_prompt(row: dict[str, Any]) -> Any:
    if row.get("prompt") is not None or row.get("messages") is None:
        return row.get("prompt", "")
    messages = list(row["messages"])
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    return messages


def _in_4bit(config: TrainConfig) -> bool:
    return config.adapter is not None and config.adapter.load_in_4bit


def start_online_run(
    config: TrainConfig,
    method: Any,
    hyper: dict[str, Any],
    *,
    progress: bool = True,
    needs_reference: bool = False,
    needs_reward: bool = True,
    data_format: str = "prompt",
) -> OnlineRun:
    """Check the settings, then load everything an online method's loop needs.

    `data_format` `sft` reads rows with completions (GKD trains on the dataset's completions
    part of the time); the prompts are then as `training_prompts` cuts them.
    """
    from tqdm.auto import tqdm

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(
            f"method {method.name} trains in one process: run it without accelerate launch "
            "or torchrun"
        )
    if needs_reward and not config.reward:
        raise InputError(
            f"method {method.name} needs a reward: --reward SPEC ({SPEC_FORMS}) or reward: "
            "in the config"
        )
    rows = load_rows(config.data, data_format, limit=config.limit)  # a bad file fails first
    dtype = precision.weights_dtype(config.dtype, config.adapter)
    placement = precision.plan(config.device, config.mixed_precision, dtype)
    accelerator = fresh_accelerator(**placement.accelerator_options())
    device = accelerator.device
    rollouts = choose_rollouts(config.rollouts, device, load_in_4bit=_in_4bit(config))
    # Before the policy loads, so a reward that cannot be built (a missing function, a rules
    # file's unmapped label) stops the run at once. Frozen: a reward model loads on the run's
    # device, `auto` in the checkpoint's dtype there.
    rewarder = (
        build_rewarder(config.reward, device=str(device), dtype=config.dtype)
        if config.reward
        else None
    )
    torch.manual_seed(config.seed)
    loaded = load_model(config.model, dtype, device=device)
    tf32 = precision.use_tf32(device, config.tf32)
    placed = precision.record(device, loaded.identity["dtype"], accelerator.mixed_precision, tf32)
    placed["rollouts"] = rollouts
    precision.warn_if_updates_round_away(loaded.identity["dtype"], config.adapter)
    tokenizer, model = loaded.tokenizer, loaded.model
    prompts = training_prompts(rows, data_format, tokenizer, config.max_length)
    total = config.max_steps or max(1, int(len(prompts) / config.batch_size * config.epochs))
    adapter, initial_adapter = config.adapter, None
    if adapter is not None:
        model = adapters.add_adapter(
            model,
            adapter.type,
            adapter.args,
            total_steps=total,
            calibration=lambda m: _calibrate(m, prompts),
        )
        if adapters.mutates_base(adapter.type, adapter.args):
            initial_adapter = Path(config.out) / "adapter-init"
            adapters.save_initial_adapter(model, initial_adapter)
    reference = None
    # The base with adapters disabled is the default reference, unless the adapter's
    # initialisation rewrote the base weights (PiSSA, OLoRA, CorDA): then a separate copy of
    # the base. A `reference` the config names is always loaded, as the offline methods do.
    own_reference = (
        config.reference is not None
        or adapter is None
        or adapters.mutates_base(adapter.type, adapter.args)
    )
    if needs_reference and own_reference:
        reference = load_model(config.reference or config.model, dtype, device=device).model
        reference.requires_grad_(False)
    sampler = build_sampler(
        rollouts,
        model,
        tokenizer,
        config,
        prompts,
        dtype=loaded.identity["dtype"],
        mixed_precision=accelerator.mixed_precision,
        device=device,
    )
    scorer = PolicyScorer(model)
    parameters = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = adamw(parameters, config.learning_rate, config.weight_decay)
    # On the device, under the run's autocast (accelerate wraps the scorer's forward).
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    return OnlineRun(
        config=config,
        method=method,
        hyper=hyper,
        tokenizer=tokenizer,
        model=model,
        accelerator=accelerator,
        scorer=scorer,
        parameters=parameters,
        optimizer=optimizer,
        prompts=prompts,
        sampler=sampler,
        rewarder=rewarder,
        total=total,
        log=MetricsLog(Path(config.out) / "metrics.jsonl"),
        identity=loaded.identity,
        placement=placed,
        reference=reference,
        needs_reference=needs_reference,
        initial_adapter=initial_adapter,
        bar=tqdm(total=total, desc=f"train {method.name}", disable=not progress),
    )


def finish_online_run(run: OnlineRun, metadata: dict[str, Any] | None = None) -> TrainSummary:
    """Close the sampler and reward, save the `hf:`-loadable checkpoint, summarise the run."""
    if run.bar is not None:
        run.bar.close()
    run.sampler.close()
    # What decided the rewards (each term's source, options and weight), kept with the weights.
    reward = run.rewarder.identity() if run.rewarder is not None else None
    if run.rewarder is not None:
        run.rewarder.close()
    config, adapter = run.config, run.config.adapter
    seconds = time.monotonic() - run.started
    summary = TrainSummary(
        Path(config.out), run.step, run.step * config.batch_size, seconds, run.last
    )
    save_checkpoint(
        run.model,
        run.tokenizer,
        Path(config.out),
        metadata={
            "method": run.method.name,
            "config": config.to_dict(),
            "base": run.identity,
            "hyperparameters": run.hyper,
            "placement": run.placement,  # device, dtype, mixed precision, TF32
            "final": run.last,
            "reward": reward,
            "adapter": None if adapter is None else {"type": adapter.type, "args": adapter.args},
            **(metadata or {}),
        },
        merge_lora=True,
        initial_adapter=run.initial_adapter,
    )
    return summary
