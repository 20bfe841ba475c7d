"""PPO's loop: sample, reward, score against the reference, then several epochs of updates.

Each step, as one iteration of TRL's `PPOTrainer.train` (TRL 1.9.0): `group_size` completions
per prompt from the current policy (`run.sampler`; each its own rollout, so `--group-size 1` is
TRL's one per prompt, and more fill a batch for the price of one generate call), a score per
completion (`run.rewarder`: reward model, judge, rule or function; less
`missing_eos_penalty` without EOS), the sampling policy's
per-token log-probs and values, the reference's log-probs, then `losses.ppo.ppo_targets`
(KL-penalised rewards, GAE, whitening) once, and `num_ppo_epochs` passes over
`num_mini_batches` shuffled mini-batches, one optimizer update each, on `losses.ppo.ppo_loss`.
A step is one batch of rollouts, as TRL's `global_step`: `max_steps` counts generations.

The value head is one linear unit on the policy's last hidden state, detached: not TRL 1.x's
separate value model initialised from the reward model, because rewards here may come from a
rule, a judge or a sum of several with no reward model to start from, and a second backbone
would double the run's memory. Detaching keeps what the separate model guarantees, that the
policy is moved by the policy loss alone (a shared backbone, as TRL's older
`AutoModelForCausalLMWithValueHead`, lets the value loss move the policy too); the price is a
critic that is a linear probe of the policy's features. The head is float32 (TRL upcasts
its head's output), starts at zero (`ValueHead`), and is dropped at the end: the checkpoint is
the policy alone, a plain causal LM that loads as `hf:`.

Tensors are laid out as TRL's responses, each completion from column 0 (`completion_layout`),
so the score lands where TRL puts it. Forward passes run with dropout off (TRL disables it in
policy, reference and value model). Deviations: log-probs are taken at temperature 1, where TRL
divides the logits by the sampling temperature; the sampler draws with `temperature`, so at
the default 1.0 the two agree. At another temperature the ratio is still sound (old and new
log-probs are both softmax(z)'s, so it starts at 1 and the clip bounds softmax(z)'s change),
but the samples come from softmax(z / T) while the gradient and the KL estimate refer to
softmax(z): a slightly off-policy estimate. TRL's way needs the fused scorer
(`kernels.causal_lm`) to take a temperature.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from evalharness.errors import InputError
from evalharness.kernels.causal_lm import decoder_of

from . import losses
from .config import TrainConfig
from .loop import TrainSummary
from .losses import hyperparameters
from .losses.ppo import penalised_scores, ppo_loss, ppo_targets, select
from .models import core_model, scored_mask
from .online_run import OnlineRun, finish_online_run, start_online_run
from .rollouts import Prompt, rollout_batch


class ValueHead(torch.nn.Module):
    """`V(s_t)`: one linear unit on the (detached) hidden state that predicts token t+1, in
    float32; the value loss trains the unit only (see the module docstring)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)
        # V = 0 to start: the first advantages are the discounted (KL-penalised) scores, not
        # the differences of a random critic's outputs, which would swamp them. TRL starts its
        # value model from the reward model for the same reason, a critic that reads scores.
        torch.nn.init.zeros_(self.summary.weight)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.detach().float()).squeeze(-1)


@contextmanager
def captured_hidden(model: Any) -> Iterator[list[torch.Tensor]]:
    """The decoder's last hidden states of every forward pass run inside the block.

    The policy's scorer computes them on its fused log-prob path and keeps them to itself; a
    hook hands them to the value head so one forward pass serves both, with gradient.
    """
    captured: list[torch.Tensor] = []

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output.last_hidden_state)

    handle = decoder_of(core_model(model)).register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


def completion_layout(
    per_position: torch.Tensor, labels: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position values `[B, L]` of a (prompt + completion) batch as TRL lays responses
    out, `[B, width]` from each completion's first token, and the mask of completion tokens.

    Column j of a row reads the position that predicts its completion token j (gradient kept);
    columns past the completion read clamped positions and are masked.
    """
    scored = scored_mask(labels)
    start = scored.to(torch.int64).argmax(dim=-1)
    columns = torch.arange(width, device=labels.device)
    index = (start[:, None] + columns).clamp(max=labels.shape[1] - 1)
    mask = columns[None, :] < scored.sum(dim=-1)[:, None]
    return per_position.gather(1, index), mask


def score(
    run: OnlineRun, head: ValueHead, batch: dict[str, torch.Tensor], width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy log-probs, values and completion mask of `batch`, in completion layout."""
    with captured_hidden(run.model) as hidden:
        token_logps, _ = run.scorer(batch["input_ids"], batch["attention_mask"], batch["labels"])
    logps, mask = completion_layout(token_logps, batch["labels"], width)
    values, _ = completion_layout(head(hidden[-1]), batch["labels"], width)
    return logps, values, mask


def sample(
    run: OnlineRun, prompts: list[Prompt]
) -> tuple[list[Prompt], list[list[int]], list[float]]:
    """`group_size` completions per prompt (token ids), each its own rollout: the prompt of
    each, the completions and their rewards."""
    samples = run.config.group_size
    owners, completions = [], []
    for offset, prompt in enumerate(prompts):
        with run.accelerator.autocast():
            drawn = run.sampler.sample(prompt.ids, samples, run.sample_seed(offset))
        owners.extend([prompt] * len(drawn))
        completions.extend(drawn)
    assert run.rewarder is not None
    rollouts = [r for p, c in zip(owners, completions, strict=True) for r in run.rollouts(p, [c])]
    return owners, completions, list(run.rewarder.rewards(rollouts))


def value_head(run: OnlineRun) -> ValueHead:
    """A fresh value head (zero, so nothing to seed), in the optimizer and in the gradient clip
    with the policy."""
    hidden_size = core_model(run.model).get_output_embeddings().weight.shape[-1]
    head = ValueHead(hidden_size).to(run.device)
    parameters = list(head.parameters())
    run.optimizer.add_param_group({"params": parameters})
    run.parameters.extend(parameters)
    return head


def train_ppo(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """PPO with a value head; writes an `hf:`-loadable checkpoint (the policy) to `config.out`."""
    method = losses.method(config.method)
    hyper = hyperparameters(method, config.loss_args)
    epochs, mini_batches = hyper["num_ppo_epochs"], hyper["num_mini_batches"]
    if config.group_size < 1 or (config.batch_size * config.group_size) % mini_batches:
        raise InputError(
            f"ppo: batch_size x group_size = {config.batch_size} x {config.group_size} rollouts "
            f"per step must be a positive multiple of num_mini_batches={mini_batches} (split "
            "evenly, as TRL's)"
        )
    run = start_online_run(
        config, method, hyper, progress=progress, needs_reference=hyper["kl_coef"] != 0.0
    )
    head = value_head(run)
    shuffle = torch.Generator().manual_seed(config.seed)
    eos = run.tokenizer.eos_token_id
    for _, prompts in run.batches():
        run.scorer.eval()  # dropout off in every pass, as TRL's PPOTrainer
        owners, completions, rewards = sample(run, prompts)
        rows = [(p.ids, c) for p, c in zip(owners, completions, strict=True)]
        batch = rollout_batch(rows, run.tokenizer.pad_token_id, run.device)
        width = max(len(c) for c in completions)
        with torch.no_grad():
            old_logps, old_values, mask = score(run, head, batch, width)
        reference = run.reference_token_logps(batch)
        if reference is not None:
            reference = completion_layout(reference, batch["labels"], width)[0]
        has_eos = torch.tensor([c[-1] == eos for c in completions], device=run.device)
        scores = penalised_scores(
            torch.tensor(rewards, device=run.device), has_eos, hyper["missing_eos_penalty"]
        )
        targets = ppo_targets(
            scores,
            old_logps,
            reference,
            old_values,
            mask,
            **{k: hyper[k] for k in ("kl_coef", "kl_estimator", "gamma", "lam", "whiten_rewards")},
        )
        updates = []
        for epoch in range(epochs):
            order = torch.randperm(len(rows), generator=shuffle).to(run.device)
            pieces = [p for p in torch.tensor_split(order, mini_batches) if len(p)]
            for number, piece in enumerate(pieces):
                part = {key: value[piece] for key, value in batch.items()}
                logps, values, part_mask = score(run, head, part, width)
                loss = ppo_loss(
                    logps,
                    old_logps[piece],
                    values,
                    part_mask,
                    select(targets, piece),
                    **{k: hyper[k] for k in ("cliprange", "cliprange_value", "vf_coef")},
                )
                last = epoch == epochs - 1 and number == len(pieces) - 1
                run.optimizer_step(loss.loss, last=last)
                updates.append(loss)
        run.record(step_metrics(rewards, scores, targets, mask, updates, hyper["kl_coef"]))
    return finish_online_run(run, metadata={"value_head": "linear on the last hidden state"})


def step_metrics(
    rewards: list[float],
    scores: torch.Tensor,
    targets: Any,
    mask: torch.Tensor,
    updates: list[Any],
    kl_coef: float,
) -> dict[str, float]:
    """TRL's logged PPO statistics for one batch of rollouts (means over its updates)."""

    def mean(name: str) -> float:
        return float(torch.stack([getattr(u, name).detach() for u in updates]).mean())

    kl = float(targets.kl.sum(-1).mean())
    reward = torch.tensor(rewards, dtype=torch.float64)
    return {
        "loss": mean("loss"),
        "reward/mean": float(reward.mean()),
        "reward/std": float(reward.std()) if len(rewards) > 1 else 0.0,
        "objective/scores": float(scores.mean()),
        "objective/kl": kl,
        "objective/rlhf_reward": float(scores.mean()) - kl_coef * kl,
        "loss/policy": mean("policy"),
        "loss/value": mean("value"),
        "policy/clipfrac": mean("policy_clipfrac"),
        "value/clipfrac": mean("value_clipfrac"),
        "policy/approxkl": mean("approxkl"),
        "completion_tokens": float(mask.sum(-1).float().mean()),
    }
