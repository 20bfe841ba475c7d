"""GKD's loop: distil a teacher into the policy on the policy's own samples (Agarwal et al. 2024).

As TRL's `GKDTrainer.training_step` (TRL v1.9.0, trl/experimental/gkd/gkd_trainer.py
l. 491-531, with `generate_on_policy_outputs` l. 448-489 and `compute_loss` l. 398-428): each
step draws u ~ U[0, 1); if u <= `lmbda` the batch's completions are the student's own samples
(on-policy), else, with `seq_kd`, the teacher's samples, else the dataset's completions. Student
and teacher then score the same tokens and the loss is the generalised JSD between their full
next-token distributions at every completion position (`losses.distill`). The teacher is a
frozen model with the student's vocabulary, named by the `teacher` option.

Sampling (student and, with `seq_kd`, teacher) uses GKD's own `temperature` option (TRL's
default 0.9), which replaces the shared `temperature` setting for this method. A configured
`reward` is not optimised: it measures the student's samples (`reward/mean` on the steps that
sample the student), so a run shows whether distillation moves the policy towards what the
reward prefers.
"""

from __future__ import annotations

import random
from dataclasses import fields, replace
from typing import Any

import torch

from evalharness.errors import InputError

from . import losses
from .config import TrainConfig
from .data import LoadedRows, load_rows, tokenize_rows
from .loop import TrainSummary
from .losses import hyperparameters
from .losses.distill import check_beta
from .models import load_model, scored_mask
from .online_run import OnlineRun, finish_online_run, start_online_run
from .rollouts import HFSampler, Prompt, Sampler, rollout_batch

#: Where a step's completions came from, as logged (`source`: 0, 1, 2).
SOURCES = ("student", "teacher", "data")


def train_gkd(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """GKD from `loss_args.teacher` into `config.model`; writes an `hf:`-loadable checkpoint."""
    method = losses.method(config.method)
    hyper = hyperparameters(method, config.loss_args)
    check_settings(config, hyper)
    rows = distillation_rows(config)  # a bad file fails before anything loads
    # The student samples through the run's sampler (synced after each step) at GKD's
    # temperature, which is also what the checkpoint's recorded config then says.
    config = replace(config, temperature=hyper["temperature"])
    run = start_online_run(config, method, hyper, progress=progress, needs_reward=False,
                           data_format="sft")  # fmt: skip
    teacher = load_teacher(hyper["teacher"], config, run)
    teacher_sampler = HFSampler(
        teacher, run.tokenizer, temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
    )  # fmt: skip
    completions = dataset_completions(rows, run.tokenizer, config.max_length)
    dataset = {id(p): pair for p, pair in zip(run.prompts, completions, strict=True)}
    coin = random.Random(config.seed)
    for _, prompts in run.batches():
        run.scorer.eval()
        if coin.random() <= hyper["lmbda"]:
            source, samples = "student", sampled(run, run.sampler, prompts)
        elif hyper["seq_kd"]:
            source, samples = "teacher", sampled(run, teacher_sampler, prompts)
        else:
            source, samples = "data", [dataset[id(p)] for p in prompts]
        run.scorer.train()
        batch = rollout_batch(samples, run.tokenizer.pad_token_id, run.device)
        mask = scored_mask(batch["labels"])
        # The divergence in float32 whatever the autocast: a bf16 log-softmax over a large
        # vocabulary loses the tail the JSD compares. Cast as they come out, so the half-precision
        # logits (nothing's backward needs them) are not also held through the backward pass.
        with run.accelerator.autocast():
            student_logits = run.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
            with torch.no_grad():
                teacher_logits = teacher(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits.float()
        loss = method.loss(
            student_logits=student_logits, teacher_logits=teacher_logits, token_mask=mask, **hyper
        ).mean()
        run.optimizer_step(loss)
        metrics = {
            "loss": float(loss.detach()),
            "source": float(SOURCES.index(source)),
            "completion_tokens": float(mask.sum(-1).float().mean()),
        }
        if source == "student" and run.rewarder is not None:
            rollouts = [r for p, (_, c) in zip(prompts, samples, strict=True)
                        for r in run.rollouts(p, [c])]  # fmt: skip
            rewards = torch.tensor(run.rewarder.rewards(rollouts))
            metrics["reward/mean"] = float(rewards.mean())
            metrics["reward/std"] = float(rewards.std()) if len(rewards) > 1 else 0.0
        run.record(metrics)
    return finish_online_run(run, metadata={"teacher": hyper["teacher"]})


def check_settings(config: TrainConfig, hyper: dict[str, Any]) -> None:
    """What GKD needs before anything loads: a teacher, beta in [0, 1], one sampling
    temperature (GKD's own; the shared setting changed alone would be silently ignored)."""
    if not hyper["teacher"]:
        raise InputError(
            "method gkd needs a teacher: loss_args teacher: hf:DIR (or --loss-arg teacher=hf:DIR)"
        )
    check_beta(hyper["beta"])
    default = next(f.default for f in fields(TrainConfig) if f.name == "temperature")
    if config.temperature != default and "temperature" not in config.loss_args:
        raise InputError(
            f"method gkd samples at its own temperature option (TRL's default 0.9), not "
            f"temperature={config.temperature}: set loss_args temperature instead"
        )


def distillation_rows(config: TrainConfig) -> LoadedRows:
    """The rows, checked: `prompt` + `completion` or `messages` (TRL's GKD takes both); a
    `text` row has no prompt to sample from, and is an error naming its line."""
    rows = load_rows(config.data, "sft", limit=config.limit)
    for row, where in zip(rows, rows.locations, strict=True):
        if row.get("messages") is None and row.get("completion") is None:
            raise InputError(
                f"{where}: method gkd needs rows with prompt + completion or messages (the "
                "prompt is what the student samples from)"
            )
    return rows


def dataset_completions(
    rows: LoadedRows, tokenizer: Any, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Each row's (prompt ids, completion ids) in row order, cut as the run's prompts are
    (`online_run.training_prompts`: a conversation's completion is its final assistant turns)."""
    examples = tokenize_rows(
        list(rows), "sft", tokenizer, max_length=max_length, where=list(rows.locations),
        assistant_turns="last",
    )  # fmt: skip
    return [(e.prompt_ids, e.input_ids[e.prompt_length :]) for e in examples]


def load_teacher(spec: str, config: TrainConfig, run: OnlineRun) -> Any:
    """The frozen teacher on the run's device (`auto`: the checkpoint's dtype on an
    accelerator, float32 on the CPU); its vocabulary must be the student's, as TRL checks."""
    teacher = load_model(spec, config.dtype, device=run.device).model
    teacher.requires_grad_(False)
    teacher.eval()
    student_size = run.model.get_output_embeddings().weight.shape[0]
    teacher_size = teacher.get_output_embeddings().weight.shape[0]
    if student_size != teacher_size:
        raise InputError(
            f"teacher {spec} has a vocabulary of {teacher_size} tokens but the student "
            f"{config.model} has {student_size}: GKD compares full next-token distributions, "
            "so both need the same vocabulary"
        )
    return teacher


def sampled(
    run: OnlineRun, sampler: Sampler, prompts: list[Prompt]
) -> list[tuple[list[int], list[int]]]:
    """One completion of each prompt from `sampler`, seeded by the step (TRL samples one)."""
    samples = []
    for offset, prompt in enumerate(prompts):
        with run.accelerator.autocast():
            (completion,) = sampler.sample(prompt.ids, 1, run.sample_seed(offset))
        samples.append((prompt.ids, completion))
    return samples
