"""Online methods (GRPO, RLOO): sample G completions per prompt, reward them, update.

Each step: B prompts → G samples each from the current policy → rewards from a reward model
(`rm:DIR`, the harness's reward-model backend) → the method's loss over per-token log-probs
from the same fused scoring path as every offline method. One optimisation step per batch of
samples, so the "old" policy is the current one detached (ratio 1, the exact policy gradient).

Policy and reference run on the run's device (`trainers.precision`: the first accelerator
unless `device` says otherwise), sampling and scoring under its autocast; so does the reward
model where model specs name their device (`ModelSpec.device`), else it runs on the host.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from evalharness.errors import InputError

from . import adapters, losses, precision
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .data import load_rows, tokenize_rows
from .distributed import fresh_accelerator
from .loop import TrainSummary
from .losses import hyperparameters
from .metrics import MetricsLog
from .models import (
    PolicyScorer,
    adamw,
    adapters_disabled,
    core_model,
    load_model,
    scored_mask,
)


def prompt_messages(prompt: Any) -> list[dict[str, str]]:
    """The prompt as chat messages, for the reward model's view of the dialogue."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def _calibrate(model: Any, prompts: list[tuple[Any, list[int]]]) -> None:
    """Forward passes over the first prompts, one each (CorDA's covariance)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for _, ids in prompts[:16]:
            model(input_ids=torch.tensor([ids], device=device))


def sample_group(
    model: Any, tokenizer: Any, prompt_ids: list[int], config: TrainConfig, seed: int
) -> list[list[int]]:
    """G completions of one prompt (token ids, cut after the first EOS)."""
    torch.manual_seed(seed)
    device = next(core_model(model).parameters()).device
    inputs = torch.tensor([prompt_ids] * config.group_size, device=device)
    with torch.no_grad():
        out = core_model(model).generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            do_sample=True,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    eos = tokenizer.eos_token_id
    completions = []
    for row in out[:, len(prompt_ids) :].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        completions.append(row or [eos if eos is not None else tokenizer.pad_token_id])
    return completions


def rollout_batch(
    rows: list[tuple[list[int], list[int]]], pad_token_id: int, device: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """Right-padded (prompt + completion) rows with only completion tokens labelled."""
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (prompt, completion) in enumerate(rows):
        ids = prompt + completion
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, len(prompt) : len(ids)] = torch.tensor(completion)
        attention[r, : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    return {key: value.to(device) for key, value in batch.items()}


def train_online(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """GRPO / RLOO with a reward model; writes an `hf:`-loadable checkpoint to `config.out`."""
    from tqdm.auto import tqdm

    from evalharness.backends.reward import RewardModelBackend
    from evalharness.backends.spec import parse_model_spec
    from evalharness.engine.requests import Message, RewardRequest

    method = losses.method(config.method)
    hyper = hyperparameters(method, config.loss_args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # This loop is single-process: launched N times it would train N copies that all
        # write the same checkpoint.
        raise InputError(
            f"method {method.name} trains in one process: run it without accelerate launch "
            "or torchrun"
        )
    if not config.reward or not config.reward.startswith("rm:"):
        raise InputError(f"method {method.name} needs --reward rm:DIR (a reward model)")
    if config.group_size < 2:
        raise InputError(f"method {method.name} needs --group-size of at least 2")
    rows = load_rows(config.data, "prompt", limit=config.limit)  # a bad file fails before loads
    torch.manual_seed(config.seed)
    dtype = precision.weights_dtype(config.dtype, config.adapter)
    placement = precision.plan(config.device, config.mixed_precision, dtype)
    accelerator = fresh_accelerator(**placement.accelerator_options())
    device = accelerator.device
    loaded = load_model(config.model, dtype, device=device)
    tf32 = precision.use_tf32(device, config.tf32)
    mixed = accelerator.mixed_precision
    placed = precision.record(device, loaded.identity["dtype"], mixed, tf32)
    precision.warn_if_updates_round_away(loaded.identity["dtype"], config.adapter)
    tokenizer, model = loaded.tokenizer, loaded.model
    examples = tokenize_rows(
        list(rows), "prompt", tokenizer, max_length=config.max_length, where=list(rows.locations)
    )
    prompts = [(prompt_messages(e.prompt), list(e.prompt_ids)) for e in examples]
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
    # The base with adapters disabled is the reference, unless the adapter's initialisation
    # rewrote the base weights (PiSSA, OLoRA, CorDA): then a separate copy of the base.
    own_reference = adapter is None or adapters.mutates_base(adapter.type, adapter.args)
    if float(hyper.get("beta", 0.0) or 0.0) > 0 and own_reference:
        reference = load_model(config.reference or config.model, dtype, device=device).model
        reference.requires_grad_(False)
    # Frozen: the reward backend loads it on the run's device, `auto` in the checkpoint's
    # dtype there (float32 on the CPU), by the shared rule.
    rewarder = RewardModelBackend(
        parse_model_spec(config.reward, dtype=config.dtype, device=str(device))
    )
    scorer = PolicyScorer(model)
    parameters = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = adamw(parameters, config.learning_rate, config.weight_decay)
    # On the device, under the run's autocast (accelerate wraps the scorer's forward).
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    log = MetricsLog(Path(config.out) / "metrics.jsonl")
    started, step, record = time.monotonic(), 0, {}
    bar = tqdm(total=total, desc=f"train {method.name}", disable=not progress)
    generator = torch.Generator().manual_seed(config.seed)
    while step < total:
        order = torch.randperm(len(prompts), generator=generator).tolist()
        for start in range(0, len(order), config.batch_size):
            chosen = [prompts[i] for i in order[start : start + config.batch_size]]
            samples, rewards = [], []
            scorer.eval()
            for offset, (messages, ids) in enumerate(chosen):
                seed = config.seed * 1_000_003 + step * 1000 + offset
                with accelerator.autocast():
                    group = sample_group(model, tokenizer, ids, config, seed)
                texts = [tokenizer.decode(c, skip_special_tokens=True) for c in group]
                requests = [
                    RewardRequest(
                        tuple(Message(m["role"], m["content"]) for m in messages)
                        + (Message("assistant", text),)
                    )
                    for text in texts
                ]
                rewards.extend(r.reward for r in rewarder.reward(requests))
                samples.extend((ids, completion) for completion in group)
            scorer.train()
            batch = rollout_batch(samples, tokenizer.pad_token_id, device)
            token_logps, _ = scorer(batch["input_ids"], batch["attention_mask"], batch["labels"])
            mask = scored_mask(batch["labels"])
            ref_logps = None
            if "ref_token_logps" in method.inputs and float(hyper.get("beta", 0.0) or 0.0) > 0:
                with torch.no_grad(), accelerator.autocast():
                    if reference is None:
                        with adapters_disabled(model):
                            ref_logps = scorer(
                                batch["input_ids"], batch["attention_mask"], batch["labels"]
                            )[0]
                    else:
                        ref_logps = PolicyScorer(reference)(
                            batch["input_ids"], batch["attention_mask"], batch["labels"]
                        )[0]
            available = {
                "token_logps": token_logps,
                "old_token_logps": token_logps.detach(),
                "ref_token_logps": ref_logps,
                "token_mask": mask,
                "rewards": torch.tensor(rewards, dtype=torch.float32, device=device),
                "group_size": config.group_size,
            }
            arguments = {name: available[name] for name in method.inputs if name in available}
            loss = method.loss(**arguments, **hyper).mean()
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            adapters.after_optimizer_step(model, step)
            optimizer.zero_grad()
            step += 1
            reward_tensor = torch.tensor(rewards)
            record = {
                "step": step,
                "loss": float(loss.detach()),
                "reward/mean": float(reward_tensor.mean()),
                "reward/std": float(reward_tensor.std()) if len(rewards) > 1 else 0.0,
                "completion_tokens": float(mask.sum(-1).float().mean()),
            }
            log.write(record)
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward/mean']:.3f}")
            if step >= total:
                break
    bar.close()
    rewarder.close()
    seconds = time.monotonic() - started
    summary = TrainSummary(Path(config.out), step, step * config.batch_size, seconds, record)
    metadata = {
        "method": method.name,
        "config": config.to_dict(),
        "base": loaded.identity,
        "hyperparameters": hyper,
        "placement": placed,  # device, dtype, mixed precision, TF32
        "final": record,
        "adapter": None if adapter is None else {"type": adapter.type, "args": adapter.args},
    }
    save_checkpoint(
        model,
        tokenizer,
        Path(config.out),
        metadata=metadata,
        merge_lora=True,
        initial_adapter=initial_adapter,
    )
    return summary
