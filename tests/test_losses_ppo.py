"""PPO's pieces against a float64 numpy transcription of TRL's PPOTrainer.

Every `trl_*` function below is transcribed by hand from TRL 1.9.0 (tag v1.9.0, commit
35def3ee000a87f6839e66f4b7749b06274ed1b3) and calls nothing under test:

- trl/experimental/ppo/ppo_trainer.py: `INVALID_LOGPROB = 1.0` (l. 69), `masked_mean`
  (l. 237-242), `masked_var` (l. 245-261), `masked_whiten` (l. 264-270); in `PPOTrainer.train`,
  `sequence_length` (l. 727), the missing-EOS penalty (l. 757-759), the padding masks, the
  per-token rewards with the k1/k3 KL and the score at `actual_end` (l. 762-779), reward
  whitening (l. 781-784), GAE, returns and advantage whitening (l. 786-799), and the mini-batch
  loss with its statistics (l. 820-857).
- trl/experimental/utils.py: `first_true_indices` (l. 723-743).
- trl/experimental/ppo/ppo_config.py: the defaults of the options (l. 133-136, 173-176,
  232-272).

Responses are laid out as TRL's: from column 0, right-padded with a pad token that is not EOS.
Inputs carry arbitrary numbers on padding, which both sides must ignore.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import evalharness.trainers.losses as losses
from evalharness.errors import InputError
from evalharness.trainers.losses import hyperparameters, ppo

TOLERANCE = 1e-6
PAD, EOS = 0, 2
INVALID_LOGPROB = 1.0


def tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(values))


def assert_close(actual: torch.Tensor, expected: np.ndarray | float) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=0, atol=TOLERANCE)


# --- the transcription ------------------------------------------------------------------------


def trl_first_true_indices(bools: np.ndarray) -> np.ndarray:
    row_len = bools.shape[-1]
    zero_or_index = row_len * (~bools).astype(np.int64) + np.arange(row_len, dtype=np.int64)
    return zero_or_index.min(axis=-1)


def trl_masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    return (values * mask).sum() / mask.sum()


def trl_masked_var(values: np.ndarray, mask: np.ndarray, unbiased: bool = True) -> float:
    mean = trl_masked_mean(values, mask)
    centered_values = values - mean
    variance = trl_masked_mean(centered_values**2, mask)
    if unbiased:
        mask_sum = mask.sum()
        if mask_sum == 0:
            raise ValueError("The sum of the mask is zero")
        bessel_correction = mask_sum / (mask_sum - 1)
        variance = variance * bessel_correction
    return variance


def trl_masked_whiten(values: np.ndarray, mask: np.ndarray, shift_mean: bool = True) -> np.ndarray:
    mean, var = trl_masked_mean(values, mask), trl_masked_var(values, mask)
    whitened = (values - mean) * (1.0 / np.sqrt(var + 1e-8))
    if not shift_mean:
        whitened += mean
    return whitened


def trl_rollout(
    data: dict[str, np.ndarray],
    *,
    kl_coef: float,
    kl_estimator: str,
    gamma: float,
    lam: float,
    whiten_rewards: bool,
    missing_eos_penalty: float | None = None,
) -> dict[str, np.ndarray]:
    """`PPOTrainer.train` from `sequence_length` to the whitened advantages (l. 727-799)."""
    responses = data["responses"]
    scores = data["scores"].copy()
    sequence_lengths = trl_first_true_indices(responses == PAD) - 1
    contain_eos_token = np.any(responses == EOS, axis=-1)
    if missing_eos_penalty is not None:
        scores[~contain_eos_token] -= missing_eos_penalty
    response_idxs = np.tile(np.arange(responses.shape[1]), (responses.shape[0], 1))
    padding_mask = response_idxs > sequence_lengths[:, None]
    logprobs = np.where(padding_mask, INVALID_LOGPROB, data["logprobs"])
    ref_logprobs = np.where(padding_mask, INVALID_LOGPROB, data["ref_logprobs"])
    sequence_lengths_p1 = sequence_lengths + 1
    padding_mask_p1 = response_idxs > sequence_lengths_p1[:, None]
    values = np.where(padding_mask_p1, 0.0, data["values"])

    logr = ref_logprobs - logprobs
    kl = -logr if kl_estimator == "k1" else (np.exp(logr) - 1) - logr
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.copy()
    actual_start = np.arange(rewards.shape[0])
    actual_end = np.where(
        sequence_lengths_p1 < rewards.shape[1], sequence_lengths_p1, sequence_lengths
    )
    rewards[actual_start, actual_end] += scores

    if whiten_rewards:
        rewards = trl_masked_whiten(rewards, mask=~padding_mask_p1, shift_mean=False)
        rewards = np.where(padding_mask_p1, 0.0, rewards)

    lastgaelam = 0.0
    advantages_reversed = []
    gen_length = responses.shape[1]
    for t in reversed(range(gen_length)):
        nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = np.stack(advantages_reversed[::-1], axis=1)
    returns = advantages + values
    advantages = trl_masked_whiten(advantages, ~padding_mask)
    advantages = np.where(padding_mask, 0.0, advantages)
    return {
        "scores": scores,
        "kl": kl,
        "rewards": rewards,
        "values": values,
        "logprobs": logprobs,
        "advantages": advantages,
        "returns": returns,
        "padding_mask": padding_mask,
        "padding_mask_p1": padding_mask_p1,
    }


def trl_minibatch_loss(
    rollout: dict[str, np.ndarray],
    inds: np.ndarray,
    new_logprobs: np.ndarray,
    vpred: np.ndarray,
    *,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
) -> dict[str, float]:
    """One micro-batch of the PPO epochs loop (l. 820-857); `new_logprobs`, `vpred` are the
    forward pass's, already sliced to the rows `inds`."""
    padding_mask = rollout["padding_mask"][inds]
    padding_mask_p1 = rollout["padding_mask_p1"][inds]
    mb_advantage = rollout["advantages"][inds]
    mb_logprobs = rollout["logprobs"][inds]
    mb_return = rollout["returns"][inds]
    mb_values = rollout["values"][inds]
    new_logprobs = np.where(padding_mask, INVALID_LOGPROB, new_logprobs)
    vpred = np.where(padding_mask_p1, 0.0, vpred)
    vpredclipped = np.clip(vpred, mb_values - cliprange_value, mb_values + cliprange_value)
    vf_losses1 = np.square(vpred - mb_return)
    vf_losses2 = np.square(vpredclipped - mb_return)
    vf_loss_max = np.maximum(vf_losses1, vf_losses2)
    vf_loss = 0.5 * trl_masked_mean(vf_loss_max, ~padding_mask_p1)
    vf_clipfrac = trl_masked_mean((vf_losses2 > vf_losses1).astype(float), ~padding_mask_p1)
    logprobs_diff = new_logprobs - mb_logprobs
    ratio = np.exp(logprobs_diff)
    pg_losses = -mb_advantage * ratio
    pg_losses2 = -mb_advantage * np.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = np.maximum(pg_losses, pg_losses2)
    pg_loss = trl_masked_mean(pg_loss_max, ~padding_mask)
    loss = pg_loss + vf_coef * vf_loss
    pg_clipfrac = trl_masked_mean((pg_losses2 > pg_losses).astype(float), ~padding_mask)
    approxkl = 0.5 * (logprobs_diff**2).mean()
    return {
        "loss": loss,
        "policy": pg_loss,
        "value": vf_loss,
        "policy_clipfrac": pg_clipfrac,
        "value_clipfrac": vf_clipfrac,
        "approxkl": approxkl,
    }


# --- inputs -----------------------------------------------------------------------------------


def rollout_batch(seed: int, batch: int = 6, width: int = 7) -> dict[str, np.ndarray]:
    """Sampled responses (token ids, EOS then padding), their log-probs under the sampling
    policy, the reference and after an update, value predictions and scores.

    Row 0 fills the width (its score lands on its last token), row 1 has no EOS (cut by the
    length limit) and row 2 is EOS alone; numbers on padding are arbitrary."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, width, size=batch)
    lengths[0], lengths[2] = width, 1
    responses = np.full((batch, width), PAD)
    for row, length in enumerate(lengths):
        responses[row, :length] = rng.integers(3, 20, size=length)
        if row != 1:
            responses[row, length - 1] = EOS
    logprobs = np.log(rng.uniform(0.05, 0.95, size=(batch, width)))
    return {
        "responses": responses,
        "logprobs": logprobs,
        "ref_logprobs": logprobs + rng.normal(scale=0.4, size=logprobs.shape),
        "new_logprobs": logprobs + rng.normal(scale=0.2, size=logprobs.shape),
        "values": rng.normal(size=(batch, width)),
        "vpred": rng.normal(size=(batch, width)),
        "scores": rng.normal(scale=2.0, size=batch),
    }


def token_mask(data: dict[str, np.ndarray]) -> torch.Tensor:
    """The completion tokens (EOS included): everything before the padding."""
    return tensor(np.cumsum(data["responses"] == PAD, axis=-1) == 0)


def targets_of(data: dict[str, np.ndarray], **options) -> ppo.Targets:
    return ppo.ppo_targets(
        tensor(data["scores"]),
        tensor(data["logprobs"]),
        tensor(data["ref_logprobs"]),
        tensor(data["values"]),
        token_mask(data),
        **options,
    )


ROLLOUT_OPTIONS = [
    {"kl_coef": 0.05, "kl_estimator": "k1", "gamma": 1.0, "lam": 0.95, "whiten_rewards": False},
    {"kl_coef": 0.05, "kl_estimator": "k3", "gamma": 1.0, "lam": 0.95, "whiten_rewards": False},
    {"kl_coef": 0.3, "kl_estimator": "k1", "gamma": 0.9, "lam": 0.8, "whiten_rewards": True},
    {"kl_coef": 0.2, "kl_estimator": "k3", "gamma": 0.99, "lam": 1.0, "whiten_rewards": True},
    {"kl_coef": 0.0, "kl_estimator": "k1", "gamma": 0.95, "lam": 0.0, "whiten_rewards": False},
]


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", ROLLOUT_OPTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_rewards_advantages_and_returns_match_trl(options: dict, seed: int) -> None:
    data = rollout_batch(seed)
    expected = trl_rollout(data, **options)
    targets = targets_of(data, **options)
    assert_close(targets.rewards, expected["rewards"])
    assert_close(targets.kl, np.where(expected["padding_mask"], 0.0, expected["kl"]))
    assert_close(targets.values, expected["values"])
    assert_close(targets.advantages, expected["advantages"])
    assert_close(targets.returns, expected["returns"])
    assert torch.equal(targets.value_mask, tensor(~expected["padding_mask_p1"]))


def test_the_score_goes_one_past_the_last_token_or_on_it_in_the_last_column() -> None:
    data = rollout_batch(3)
    mask = token_mask(data)
    lengths = mask.sum(-1)
    expected = torch.where(lengths < mask.shape[1], lengths, lengths - 1)
    assert torch.equal(ppo.score_positions(mask), expected)
    assert int(expected[0]) == mask.shape[1] - 1 and int(expected[2]) == 1


@pytest.mark.parametrize(
    ("cliprange", "cliprange_value", "vf_coef"), [(0.2, 0.2, 0.1), (0.05, 0.5, 1.0)]
)
@pytest.mark.parametrize("seed", [0, 4])
def test_mini_batch_loss_matches_trl(
    cliprange: float, cliprange_value: float, vf_coef: float, seed: int
) -> None:
    data = rollout_batch(seed, batch=8)
    options = ROLLOUT_OPTIONS[2]
    expected_rollout = trl_rollout(data, **options)
    targets = targets_of(data, **options)
    rows = np.array([5, 0, 2, 7])
    clips = {"cliprange": cliprange, "cliprange_value": cliprange_value, "vf_coef": vf_coef}
    expected = trl_minibatch_loss(
        expected_rollout, rows, data["new_logprobs"][rows], data["vpred"][rows], **clips
    )
    index = torch.from_numpy(rows)
    loss = ppo.ppo_loss(
        tensor(data["new_logprobs"][rows]),
        tensor(data["logprobs"][rows]),
        tensor(data["vpred"][rows]),
        token_mask(data)[index],
        ppo.select(targets, index),
        **clips,
    )
    for name, value in expected.items():
        assert_close(getattr(loss, name), value)
    # Both clips are exercised by these inputs, so the comparison covers the clipped branches.
    assert 0 < expected["policy_clipfrac"] < 1 and 0 < expected["value_clipfrac"] < 1


def test_registered_loss_is_trls_loss_on_one_mini_batch_with_gradients() -> None:
    """The registry's `[B]` rows average to TRL's loss on the whole batch as one mini-batch,
    and the gradient reaches both the policy's log-probs and the value head's predictions."""
    data = rollout_batch(7)
    options = {**ROLLOUT_OPTIONS[1], "cliprange": 0.1, "cliprange_value": 0.3, "vf_coef": 0.5}
    rollout_options = {k: options[k] for k in ROLLOUT_OPTIONS[1]}
    rows = np.arange(len(data["scores"]))
    expected = trl_minibatch_loss(
        trl_rollout(data, **rollout_options),
        rows,
        data["new_logprobs"],
        data["vpred"],
        cliprange=0.1,
        cliprange_value=0.3,
        vf_coef=0.5,
    )
    token_logps = tensor(data["new_logprobs"]).requires_grad_()
    values = tensor(data["vpred"]).requires_grad_()
    per_row = losses.get("ppo")(
        token_logps=token_logps,
        old_token_logps=tensor(data["logprobs"]),
        ref_token_logps=tensor(data["ref_logprobs"]),
        values=values,
        old_values=tensor(data["values"]),
        token_mask=token_mask(data),
        rewards=tensor(data["scores"]).float(),
        **options,
    )
    assert per_row.shape == (len(rows),)
    assert_close(per_row.mean(), expected["loss"])
    policy_grad, value_grad = torch.autograd.grad(per_row.mean(), [token_logps, values])
    mask = token_mask(data)
    assert policy_grad[mask].abs().sum() > 0 and value_grad[mask].abs().sum() > 0
    assert torch.all(policy_grad[~mask] == 0)
    assert torch.all(value_grad[~ppo.value_mask(mask)] == 0)


def test_missing_eos_penalty_matches_trl() -> None:
    data = rollout_batch(5)
    expected = trl_rollout(data, **ROLLOUT_OPTIONS[0], missing_eos_penalty=1.5)["scores"]
    has_eos = tensor((data["responses"] == EOS).any(-1))
    assert_close(ppo.penalised_scores(tensor(data["scores"]), has_eos, 1.5), expected)
    assert_close(ppo.penalised_scores(tensor(data["scores"]), has_eos, None), data["scores"])


def test_masked_whiten_matches_trl() -> None:
    data = rollout_batch(6)
    mask = token_mask(data)
    for shift_mean in (True, False):
        expected = trl_masked_whiten(data["vpred"], mask.numpy(), shift_mean=shift_mean)
        assert_close(
            ppo.masked_whiten(tensor(data["vpred"]), mask, shift_mean=shift_mean), expected
        )


def test_options_are_trls_names_and_defaults() -> None:
    """PPOConfig's defaults (ppo_config.py l. 133-136, 173-176, 232-272)."""
    method = losses.method("ppo")
    assert method.data_format == "prompt" and method.needs_reference
    assert method.hyperparameters == {
        "cliprange": 0.2,
        "cliprange_value": 0.2,
        "vf_coef": 0.1,
        "kl_coef": 0.05,
        "kl_estimator": "k1",
        "gamma": 1.0,
        "lam": 0.95,
        "whiten_rewards": False,
        "num_ppo_epochs": 4,
        "num_mini_batches": 1,
        "missing_eos_penalty": None,
    }
    assert all(name in losses.OPTIONS for name in method.hyperparameters)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"kl_estimator": "k2"}, "kl_estimator='k2' must be one of k1, k3"),
        ({"num_ppo_epochs": "0"}, "num_ppo_epochs=0 must be at least 1"),
        ({"num_mini_batches": "-1"}, "num_mini_batches=-1 must be at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(given: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        hyperparameters(losses.method("ppo"), given)


def test_whitening_one_token_and_a_kl_without_reference_are_clear_errors() -> None:
    one = torch.tensor([[True, False]])
    with pytest.raises(InputError, match="at least 2 completion tokens"):
        ppo.masked_whiten(torch.tensor([[0.5, 0.0]], dtype=torch.float64), one)
    data = rollout_batch(2)
    with pytest.raises(InputError, match="no reference log-probs"):
        ppo.ppo_targets(
            tensor(data["scores"]),
            tensor(data["logprobs"]),
            None,
            tensor(data["values"]),
            token_mask(data),
        )
