"""GRPO and RLOO: sample G completions per prompt, reward them, one policy-gradient step.

Each step: B prompts -> G samples each from the current policy (`run.sampler`) -> a reward per
sample (`run.rewarder`: any reward spec) -> the method's loss over per-token log-probs from the
same fused scoring path as every offline method. One optimisation step per batch of samples,
so the "old" policy is the current one detached (ratio 1, the exact policy gradient). Setup,
the step mechanics and the checkpoint are `trainers.online_run`'s, shared by every online method.
"""

from __future__ import annotations

import torch

from . import losses
from .config import TrainConfig
from .loop import TrainSummary
from .losses import hyperparameters
from .models import scored_mask
from .online_run import finish_online_run, start_online_run
from .rollouts import rollout_batch


def train_online(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """GRPO / RLOO; writes an `hf:`-loadable checkpoint to `config.out`."""
    from evalharness.errors import InputError

    method = losses.method(config.method)
    hyper = hyperparameters(method, config.loss_args)
    if config.group_size < 2:
        raise InputError(f"method {method.name} needs --group-size of at least 2")
    beta = float(hyper.get("beta", 0.0) or 0.0)
    needs_reference = "ref_token_logps" in method.inputs and beta > 0
    run = start_online_run(
        config, method, hyper, progress=progress, needs_reference=needs_reference
    )
    assert run.rewarder is not None
    for _, prompts in run.batches():
        samples, rollouts = [], []
        run.scorer.eval()
        for offset, prompt in enumerate(prompts):
            with run.accelerator.autocast():
                group = run.sampler.sample(prompt.ids, config.group_size, run.sample_seed(offset))
            rollouts.extend(run.rollouts(prompt, group))
            samples.extend((prompt.ids, completion) for completion in group)
        # The whole step's rollouts at once: a judge answers them concurrently, a reward model
        # in batches (a pairwise judge still compares only rollouts of one prompt).
        rewards = run.rewarder.rewards(rollouts)
        run.scorer.train()
        batch = rollout_batch(samples, run.tokenizer.pad_token_id, run.device)
        token_logps, _ = run.scorer(batch["input_ids"], batch["attention_mask"], batch["labels"])
        mask = scored_mask(batch["labels"])
        available = {
            "token_logps": token_logps,
            "old_token_logps": token_logps.detach(),
            "ref_token_logps": run.reference_token_logps(batch),
            "token_mask": mask,
            "rewards": torch.tensor(rewards, dtype=torch.float32, device=run.device),
            "group_size": config.group_size,
        }
        arguments = {name: available[name] for name in method.inputs if name in available}
        loss = method.loss(**arguments, **hyper).mean()
        run.optimizer_step(loss)
        reward_tensor = torch.tensor(rewards)
        run.record(
            {
                "loss": float(loss.detach()),
                "reward/mean": float(reward_tensor.mean()),
                "reward/std": float(reward_tensor.std()) if len(rewards) > 1 else 0.0,
                "completion_tokens": float(mask.sum(-1).float().mean()),
            }
        )
    return finish_online_run(run)
