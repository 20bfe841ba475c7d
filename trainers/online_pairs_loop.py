"""Online DPO, XPO and Nash-MD: a fresh pair per prompt, judged, then one step of the loss.

Each step, for each of `batch_size` prompts, the pair TRL 1.9.0's trainers draw:

- `online_dpo`: two samples from the current policy (`run.sampler`).
- `xpo`: one from the policy and one from the frozen reference; the loss also lowers the
  policy's likelihood of the reference's sample (exploration).
- `nash_md`: one from the policy and one from the geometric mixture of policy and reference
  (`MixtureLogits`, a logits processor over hf generation, as TRL's `GeometricMixtureWrapper`).

The reward (`run.rewarder`, any reward spec) judges each pair. A source of scalar rewards (a
reward model, a Python function, a rating judge, a weighted sum) is read as TRL reads its
reward functions: rewards less `missing_eos_penalty` for a sample without EOS, the verdict
sigmoid(r_1 - r_2). A pairwise judge gives its verdict itself, penalised on its log-odds
(`losses.online_pairs.penalise_missing_eos`). The losses are `losses.online_pairs`'; setup,
the step and the checkpoint are `trainers.online_run`'s. The reference's and the mixture's
samples come from hf generation even where the policy's come from another sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessor

from . import losses
from .config import TrainConfig
from .loop import TrainSummary
from .losses import hyperparameters
from .losses.online_pairs import geometric_mixture_logits, penalise_missing_eos
from .models import adapters_disabled, scored_mask
from .online_run import OnlineRun, finish_online_run, start_online_run
from .rewards import Rewarder
from .rollouts import Prompt, generate_completions, rollout_batch

#: Methods whose loss scores both samples of the pair (Nash-MD scores the policy's only).
SCORES_BOTH = ("online_dpo", "xpo")


class MixtureLogits(LogitsProcessor):
    """Next-token scores of the geometric mixture: the policy's logits (what `generate` hands a
    processor) mixed with the reference's on the same prefix, `geometric_mixture_logits`.

    The reference runs on the whole prefix at each step without a cache, as TRL's wrapper
    does; temperature and other warpers apply after this processor, to the mixture. Tokens an
    earlier processor banned (-inf, e.g. EOS before `min_new_tokens`) stay banned, as they
    would be had the mixing come first, as in TRL, rather than turning into NaN at c = 1.
    """

    def __init__(self, reference_logits: Callable[[torch.Tensor], torch.Tensor], coef: float):
        self.reference_logits, self.coef = reference_logits, coef

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        reference = self.reference_logits(input_ids).to(scores.dtype)
        banned = torch.isneginf(scores)
        mixed = geometric_mixture_logits(scores.masked_fill(banned, 0.0), reference, self.coef)
        return mixed.masked_fill(banned, -float("inf")).log_softmax(dim=-1)


def _generate(
    run: OnlineRun, model: Any, prompt: Prompt, seed: int, processor: LogitsProcessor | None
) -> list[int]:
    """One completion of `prompt` from `model` (cut after EOS), seeded, under the run's
    autocast as the policy's own samples are drawn."""
    with run.accelerator.autocast():
        return generate_completions(
            model,
            run.tokenizer,
            prompt.ids,
            1,
            seed,
            temperature=run.config.temperature,
            max_new_tokens=run.config.max_new_tokens,
            logits_processor=processor,
        )[0]


def reference_sample(run: OnlineRun, prompt: Prompt, seed: int) -> list[int]:
    """XPO's opponent: a sample of the frozen reference (the base with adapters off, or the
    separate copy)."""
    if run.reference is not None:
        return _generate(run, run.reference, prompt, seed, None)
    with adapters_disabled(run.model):
        return _generate(run, run.model, prompt, seed, None)


def mixture_sample(run: OnlineRun, prompt: Prompt, seed: int, coef: float) -> list[int]:
    """Nash-MD's opponent: a sample of the geometric mixture of policy and reference."""

    def reference_logits(input_ids: torch.Tensor) -> torch.Tensor:
        attention = torch.ones_like(input_ids)
        if run.reference is not None:
            return run.reference(input_ids=input_ids, attention_mask=attention).logits[:, -1]
        with adapters_disabled(run.model):
            return run.model(input_ids=input_ids, attention_mask=attention).logits[:, -1]

    return _generate(run, run.model, prompt, seed, MixtureLogits(reference_logits, coef))


def draw_pair(
    run: OnlineRun, prompt: Prompt, offset: int, options: dict[str, Any]
) -> tuple[list[int], list[int]]:
    """The (first, second) completions of the step's `offset`-th prompt for this run's method;
    the opponent's seed is the one `offset + batch_size` would have, distinct within the step."""
    name, seed = run.method.name, run.sample_seed(offset)
    if name == "online_dpo":
        first, second = run.sampler.sample(prompt.ids, 2, seed)
        return first, second
    (first,) = run.sampler.sample(prompt.ids, 1, seed)
    opponent_seed = run.sample_seed(offset + run.config.batch_size)
    if name == "xpo":
        return first, reference_sample(run, prompt, opponent_seed)
    return first, mixture_sample(run, prompt, opponent_seed, options["mixture_coef"])


def _ends_with_eos(completions: list[list[int]], eos: int | None) -> torch.Tensor:
    return torch.tensor([eos is not None and eos in c for c in completions])


def answers_pairs(rewarder: Rewarder) -> bool:
    """Whether `rewarder` gives its verdicts itself (a pairwise judge, alone or as the one term
    of a weighted sum, as `WeightedRewarder.preferences` decides) rather than by comparing
    scalar rewards."""
    from .rewards.combined import WeightedRewarder

    if isinstance(rewarder, WeightedRewarder):
        (only, weight), *rest = rewarder.terms
        return not rest and weight > 0 and answers_pairs(only)
    return type(rewarder).preferences is not Rewarder.preferences


def verdicts(
    rewarder: Rewarder,
    first: list[Any],
    second: list[Any],
    first_eos: torch.Tensor,
    second_eos: torch.Tensor,
    penalty: float | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """P(first preferred) per pair (float64) and the raw rewards `[2, P]` when the source has
    them (None for a pairwise judge, which gives its verdicts itself)."""
    if answers_pairs(rewarder):
        given = torch.tensor(rewarder.preferences(first, second), dtype=torch.float64)
        return penalise_missing_eos(given, first_eos, second_eos, penalty), None
    scores = torch.tensor(rewarder.rewards([*first, *second]), dtype=torch.float64)
    raw = scores.reshape(2, -1)
    penalised = raw.clone()
    if penalty is not None:
        penalised[0][~first_eos] -= penalty
        penalised[1][~second_eos] -= penalty
    return torch.sigmoid(penalised[0] - penalised[1]), raw


def train_online_pairs(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """Online DPO / XPO / Nash-MD; writes an `hf:`-loadable checkpoint to `config.out`."""
    method = losses.method(config.method)
    hyper = hyperparameters(method, config.loss_args)  # fails before any load
    options = {name: hyper[name] for name in method.input_options}
    loss_hyper = {k: v for k, v in hyper.items() if k not in options}
    run = start_online_run(config, method, hyper, progress=progress, needs_reference=True)
    assert run.rewarder is not None
    eos = run.tokenizer.eos_token_id
    both = method.name in SCORES_BOTH
    for _, prompts in run.batches():
        run.scorer.eval()
        pairs = [draw_pair(run, p, offset, options) for offset, p in enumerate(prompts)]
        firsts, seconds = [f for f, _ in pairs], [s for _, s in pairs]
        first_rollouts = [run.rollouts(p, [f])[0] for p, f in zip(prompts, firsts, strict=True)]
        second_rollouts = [run.rollouts(p, [s])[0] for p, s in zip(prompts, seconds, strict=True)]
        preferences, rewards = verdicts(
            run.rewarder,
            first_rollouts,
            second_rollouts,
            _ends_with_eos(firsts, eos),
            _ends_with_eos(seconds, eos),
            options["missing_eos_penalty"],
        )
        run.scorer.train()
        scored = [c for pair in pairs for c in (pair if both else pair[:1])]
        prompt_ids = [p.ids for p in prompts for _ in range(2 if both else 1)]
        batch = rollout_batch(
            list(zip(prompt_ids, scored, strict=True)), run.tokenizer.pad_token_id, run.device
        )
        token_logps, _ = run.scorer(batch["input_ids"], batch["attention_mask"], batch["labels"])
        ref_token_logps = run.reference_token_logps(batch)
        mask = scored_mask(batch["labels"])
        loss = method.loss(
            token_logps=token_logps,
            token_mask=mask,
            ref_token_logps=ref_token_logps,
            preferences=preferences,  # float64 on the CPU: each loss moves what it needs
            **loss_hyper,
        ).mean()
        run.optimizer_step(loss)
        run.record(
            _metrics(method.name, loss, preferences, rewards, token_logps, ref_token_logps, mask)
        )
    return finish_online_run(run)


def _metrics(
    name: str,
    loss: torch.Tensor,
    preferences: torch.Tensor,
    rewards: torch.Tensor | None,
    token_logps: torch.Tensor,
    ref_token_logps: torch.Tensor,
    mask: torch.Tensor,
) -> dict[str, float]:
    """The step's loss, the policy's mean reward (both samples for online DPO, its own sample
    for XPO and Nash-MD, before any EOS penalty), the opponent's, the first sample's win rate,
    and TRL's `objective/kl` estimate Σ_t (lp − lp_ref) over the scored samples."""
    kept = mask.to(token_logps.dtype)
    kl = ((token_logps.detach() - ref_token_logps) * kept).sum(-1).mean()
    record = {
        "loss": float(loss.detach()),
        "preference/first": float(preferences.mean()),
        "kl": float(kl),
        "completion_tokens": float(kept.sum(-1).mean()),
    }
    if rewards is not None:
        policy = rewards.reshape(-1) if name == "online_dpo" else rewards[0]
        record["reward/mean"] = float(policy.mean())
        if name != "online_dpo":
            record["reward/opponent"] = float(rewards[1].mean())
    return record
