"""Online DPO, XPO and Nash-MD losses against numpy transcriptions of TRL's trainers.

Every `trl_*` function below is transcribed by hand, in float64 numpy, from TRL 1.9.0 (tag
v1.9.0 of huggingface/trl, the last release holding all three trainers), `trl/experimental/`;
none calls the code under test:

- `online_dpo/online_dpo_trainer.py` `OnlineDPOTrainer.training_step`, l. 1199-1238 (the
  `missing_eos_penalty`, the `first_half >= second_half` split into chosen/rejected indices,
  padding masked from the sums, `sigmoid` / `ipo` on `pi_logratios - ref_logratios`).
- `xpo/xpo_trainer.py` `XPOTrainer._compute_rewards` l. 264-271 (the penalty),
  `training_step` l. 458 (`chosen_mask = model_scores >= ref_scores`), `_compute_logprobs`
  l. 295-301 (padding filled with 0) and `_compute_losses` l. 313-343.
- `nash_md/nash_md_trainer.py` `GeometricMixtureWrapper.forward` l. 85-87,
  `_compute_rewards` l. 333-338 (the penalty), `training_step` l. 477 (`probability =
  sigmoid(model_scores - mixture_scores)`), `_compute_logprobs` l. 360-363 and
  `_compute_losses` l. 373-385.

TRL lays a batch out as two halves (first samples, then second samples) and judges by scalar
rewards; the code under test takes pairs in consecutive rows and a verdict P(first preferred),
so each test interleaves the halves and hands the code sigmoid(r_1 - r_2) of the same rewards
(`penalise_missing_eos` applying the penalty to that verdict). Padded positions hold garbage
log-probs, which both sides must mask out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalharness.errors import InputError
from evalharness.trainers import losses
from evalharness.trainers.losses import online_pairs

P, T = 9, 6
PENALTY = 1.5


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# --- TRL 1.9.0, transcribed -----------------------------------------------------------------------


def trl_penalised(rewards: np.ndarray, contain_eos: np.ndarray, penalty: float | None):
    """`rewards[~contain_eos_token] -= missing_eos_penalty` (all three trainers)."""
    rewards = rewards.copy()
    if penalty is not None:
        rewards[~contain_eos] -= penalty
    return rewards


def trl_online_dpo(
    logprobs: np.ndarray,
    ref_logprobs: np.ndarray,
    completion_mask: np.ndarray,
    rewards: np.ndarray,
    contain_eos: np.ndarray,
    beta: float,
    loss_type: str,
    penalty: float | None,
) -> np.ndarray:
    """OnlineDPOTrainer.training_step, l. 1199-1236: `losses` (its mean is the loss)."""
    batch_size = logprobs.shape[0] // 2
    rewards = trl_penalised(rewards, contain_eos, penalty)
    first_half, second_half = rewards[:batch_size], rewards[batch_size:]
    mask = first_half >= second_half
    batch_range = np.arange(batch_size)
    chosen_indices = batch_range + (~mask * batch_size)
    rejected_indices = batch_range + (mask * batch_size)
    cr_indices = np.concatenate((chosen_indices, rejected_indices))
    cr_logprobs = logprobs[cr_indices]
    cr_ref_logprobs = ref_logprobs[cr_indices]
    padding_mask = ~completion_mask.astype(bool)
    cr_padding_mask = padding_mask[cr_indices]
    cr_logprobs_sum = (cr_logprobs * ~cr_padding_mask).sum(1)
    cr_ref_logprobs_sum = (cr_ref_logprobs * ~cr_padding_mask).sum(1)
    chosen_logprobs_sum, rejected_logprobs_sum = np.split(cr_logprobs_sum, 2)
    chosen_ref_logprobs_sum, rejected_ref_logprobs_sum = np.split(cr_ref_logprobs_sum, 2)
    pi_logratios = chosen_logprobs_sum - rejected_logprobs_sum
    ref_logratios = chosen_ref_logprobs_sum - rejected_ref_logprobs_sum
    logits = pi_logratios - ref_logratios
    if loss_type == "sigmoid":
        return -_log_sigmoid(beta * logits)
    return (logits - 1 / (2 * beta)) ** 2


def trl_xpo(
    model_logprobs_model_data: np.ndarray,
    model_logprobs_ref_data: np.ndarray,
    ref_logprobs_ref_data: np.ndarray,
    ref_logprobs_model_data: np.ndarray,
    model_mask: np.ndarray,
    ref_mask: np.ndarray,
    model_scores: np.ndarray,
    ref_scores: np.ndarray,
    model_eos: np.ndarray,
    ref_eos: np.ndarray,
    beta: float,
    alpha: float,
    loss_type: str,
    penalty: float | None,
) -> np.ndarray:
    """XPOTrainer: penalty, chosen_mask, padding filled, `dpo_losses + xpo_losses`."""
    model_scores = trl_penalised(model_scores, model_eos, penalty)
    ref_scores = trl_penalised(ref_scores, ref_eos, penalty)
    chosen_mask = model_scores >= ref_scores
    model_padding_mask, ref_padding_mask = model_mask == 0, ref_mask == 0
    model_logprobs_model_data = np.where(model_padding_mask, 0.0, model_logprobs_model_data)
    model_logprobs_ref_data = np.where(ref_padding_mask, 0.0, model_logprobs_ref_data)
    ref_logprobs_ref_data = np.where(ref_padding_mask, 0.0, ref_logprobs_ref_data)
    ref_logprobs_model_data = np.where(model_padding_mask, 0.0, ref_logprobs_model_data)

    model_logprobs_model_data_sum = model_logprobs_model_data.sum(1)
    model_logprobs_ref_data_sum = model_logprobs_ref_data.sum(1)
    ref_logprobs_ref_data_sum = ref_logprobs_ref_data.sum(1)
    ref_logprobs_model_data_sum = ref_logprobs_model_data.sum(1)
    chosen_model_logprobs = np.where(
        chosen_mask, model_logprobs_model_data_sum, model_logprobs_ref_data_sum
    )
    chosen_ref_logprobs = np.where(
        chosen_mask, ref_logprobs_model_data_sum, ref_logprobs_ref_data_sum
    )
    chosen_log_ratios = chosen_model_logprobs - chosen_ref_logprobs
    rejected_model_logprobs = np.where(
        ~chosen_mask, model_logprobs_model_data_sum, model_logprobs_ref_data_sum
    )
    rejected_ref_logprobs = np.where(
        ~chosen_mask, ref_logprobs_model_data_sum, ref_logprobs_ref_data_sum
    )
    rejected_log_ratios = rejected_model_logprobs - rejected_ref_logprobs
    logits = chosen_log_ratios - rejected_log_ratios
    if loss_type == "sigmoid":
        dpo_losses = -_log_sigmoid(beta * logits)
    else:
        dpo_losses = (logits - 1 / (2 * beta)) ** 2
    xpo_losses = alpha * model_logprobs_ref_data_sum
    return dpo_losses + xpo_losses


def trl_nash_md(
    model_logprobs_model_data: np.ndarray,
    ref_logprobs_model_data: np.ndarray,
    model_mask: np.ndarray,
    model_scores: np.ndarray,
    mixture_scores: np.ndarray,
    model_eos: np.ndarray,
    mixture_eos: np.ndarray,
    beta: float,
    penalty: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """NashMDTrainer: penalty, probability, padding filled, `beta * kl_div_loss - score`.

    Also returns d loss / d model_logprobs_model_data, read off the same lines: `score` is
    linear in the log-probs and `kl_div_loss` multiplies them by `log_ratio`, computed under
    `torch.no_grad()` (a constant).
    """
    model_scores = trl_penalised(model_scores, model_eos, penalty)
    mixture_scores = trl_penalised(mixture_scores, mixture_eos, penalty)
    probability = 1 / (1 + np.exp(-(model_scores - mixture_scores)))
    padding = model_mask == 0
    model_logprobs_model_data = np.where(padding, 0.0, model_logprobs_model_data)
    ref_logprobs_model_data = np.where(padding, 0.0, ref_logprobs_model_data)
    score = (probability - 0.5) * model_logprobs_model_data.sum(1)
    log_ratio = model_logprobs_model_data - ref_logprobs_model_data
    kl_div_loss = (log_ratio * model_logprobs_model_data).sum(1)
    loss = beta * kl_div_loss - score
    gradient = np.where(padding, 0.0, beta * log_ratio - (probability - 0.5)[:, None])
    return loss, gradient


def trl_geometric_mixture(model_logits: np.ndarray, ref_logits: np.ndarray, coef: float):
    """GeometricMixtureWrapper.forward, l. 85-87."""
    return _log_softmax(coef * ref_logits + (1 - coef) * model_logits)


# --- fixed random inputs --------------------------------------------------------------------------


def _batch(seed: int) -> dict[str, np.ndarray]:
    """Two samples per prompt in TRL's halves, with padding holding garbage log-probs."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=2 * P)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    logprobs = -rng.exponential(1.5, size=(2 * P, T))
    ref_logprobs = logprobs + rng.normal(0, 0.5, size=(2 * P, T))
    garbage = rng.normal(0, 5, size=(2 * P, T))
    rewards = rng.normal(0, 2, size=2 * P)
    rewards[P + 1] = rewards[1]  # a tie: TRL keeps the first sample as chosen
    rewards[P + 2] = rewards[2]
    return {
        "logprobs": np.where(mask == 1, logprobs, garbage),
        "ref_logprobs": np.where(mask == 1, ref_logprobs, garbage),
        "mask": mask,
        "rewards": rewards,
        "eos": rng.random(2 * P) < 0.6,
    }


def _interleaved(halves: np.ndarray) -> np.ndarray:
    """TRL's [first samples; second samples] as rows 2p, 2p + 1."""
    out = np.empty_like(halves)
    out[0::2], out[1::2] = halves[:P], halves[P:]
    return out


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _verdicts(batch: dict[str, np.ndarray], penalty: float | None) -> torch.Tensor:
    """The verdict a reward model gives on each pair, P = sigmoid(r_1 - r_2), then penalised."""
    rewards = _tensor(batch["rewards"])
    eos = torch.tensor(batch["eos"])
    verdicts = torch.sigmoid(rewards[:P] - rewards[P:])
    return online_pairs.penalise_missing_eos(verdicts, eos[:P], eos[P:], penalty)


CASES = [
    ("sigmoid", 0.1, None),
    ("sigmoid", 0.5, PENALTY),
    ("ipo", 0.1, None),
    ("ipo", 0.7, PENALTY),
]


@pytest.mark.parametrize(("loss_type", "beta", "penalty"), CASES)
def test_online_dpo_matches_trl(loss_type: str, beta: float, penalty: float | None) -> None:
    batch = _batch(seed=11)
    expected = trl_online_dpo(
        batch["logprobs"],
        batch["ref_logprobs"],
        batch["mask"],
        batch["rewards"],
        batch["eos"],
        beta,
        loss_type,
        penalty,
    )
    got = losses.get("online_dpo")(
        token_logps=_tensor(_interleaved(batch["logprobs"])),
        token_mask=torch.tensor(_interleaved(batch["mask"])).bool(),
        ref_token_logps=_tensor(_interleaved(batch["ref_logprobs"])),
        preferences=_verdicts(batch, penalty),
        beta=beta,
        loss_type=loss_type,
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("loss_type", "beta", "penalty"), CASES)
@pytest.mark.parametrize("alpha", [1e-5, 0.3])
def test_xpo_matches_trl(loss_type: str, beta: float, penalty: float | None, alpha: float) -> None:
    batch = _batch(seed=23)
    # First half: the policy's samples (model_data); second half: the reference's (ref_data).
    policy_on, ref_on, mask = batch["logprobs"], batch["ref_logprobs"], batch["mask"]
    expected = trl_xpo(
        model_logprobs_model_data=policy_on[:P],
        model_logprobs_ref_data=policy_on[P:],
        ref_logprobs_ref_data=ref_on[P:],
        ref_logprobs_model_data=ref_on[:P],
        model_mask=mask[:P],
        ref_mask=mask[P:],
        model_scores=batch["rewards"][:P],
        ref_scores=batch["rewards"][P:],
        model_eos=batch["eos"][:P],
        ref_eos=batch["eos"][P:],
        beta=beta,
        alpha=alpha,
        loss_type=loss_type,
        penalty=penalty,
    )
    got = losses.get("xpo")(
        token_logps=_tensor(_interleaved(policy_on)),
        token_mask=torch.tensor(_interleaved(mask)).bool(),
        ref_token_logps=_tensor(_interleaved(ref_on)),
        preferences=_verdicts(batch, penalty),
        beta=beta,
        loss_type=loss_type,
        alpha=alpha,
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("beta", "penalty"), [(0.1, None), (0.1, PENALTY), (0.8, PENALTY)])
def test_nash_md_matches_trl_in_value_and_gradient(beta: float, penalty: float | None) -> None:
    batch = _batch(seed=37)
    # First half: the policy's samples; second half stands for the mixture's (scores only).
    loss, gradient = trl_nash_md(
        batch["logprobs"][:P],
        batch["ref_logprobs"][:P],
        batch["mask"][:P],
        model_scores=batch["rewards"][:P],
        mixture_scores=batch["rewards"][P:],
        model_eos=batch["eos"][:P],
        mixture_eos=batch["eos"][P:],
        beta=beta,
        penalty=penalty,
    )
    token_logps = _tensor(batch["logprobs"][:P]).requires_grad_(True)
    got = losses.get("nash_md")(
        token_logps=token_logps,
        token_mask=torch.tensor(batch["mask"][:P]).bool(),
        ref_token_logps=_tensor(batch["ref_logprobs"][:P]),
        preferences=_verdicts(batch, penalty),
        beta=beta,
    )
    np.testing.assert_allclose(got.detach().numpy(), loss, rtol=0, atol=1e-6)
    got.sum().backward()
    np.testing.assert_allclose(token_logps.grad.numpy(), gradient, rtol=0, atol=1e-6)


@pytest.mark.parametrize("coef", [0.0, 0.25, 0.5, 1.0])
def test_geometric_mixture_matches_trl(coef: float) -> None:
    rng = np.random.default_rng(5)
    model_logits = rng.normal(0, 3, size=(4, 3, 17))
    ref_logits = rng.normal(0, 3, size=(4, 3, 17))
    got = online_pairs.geometric_mixture_logits(_tensor(model_logits), _tensor(ref_logits), coef)
    expected = trl_geometric_mixture(model_logits, ref_logits, coef)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


def test_a_certain_verdict_stays_certain_under_the_penalty() -> None:
    """A pairwise judge's hard verdict is not overturned by the EOS penalty (log-odds ±inf)."""
    verdicts = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    no_eos, eos = torch.tensor([False, False, False]), torch.tensor([True, True, True])
    got = online_pairs.penalise_missing_eos(verdicts, no_eos, eos, PENALTY)
    assert got[:2].tolist() == [1.0, 0.0]
    assert got[2].item() == pytest.approx(1 / (1 + np.exp(PENALTY)))


def test_options_are_listed_and_checked() -> None:
    """`evalharness methods` shows each method's TRL options; bad values fail by name."""
    from evalharness.engine.training import method_rows

    rows = {row["name"]: row for row in method_rows()}
    assert rows["online_dpo"]["hyperparameters"] == {
        "beta": 0.1,
        "loss_type": "sigmoid",
        "missing_eos_penalty": None,
    }
    assert rows["xpo"]["hyperparameters"]["alpha"] == 1e-5
    assert rows["nash_md"]["hyperparameters"] == {
        "beta": 0.1,
        "mixture_coef": 0.5,
        "missing_eos_penalty": None,
    }
    assert all(rows[n]["data"] == "prompt" and rows[n]["reference"] for n in online_pairs_names())
    nash = losses.method("nash_md")
    assert losses.hyperparameters(nash, {"mixture_coef": "0.25"})["mixture_coef"] == 0.25
    with pytest.raises(InputError, match=r"mixture_coef=1.5 must lie in \[0, 1\]"):
        losses.hyperparameters(nash, {"mixture_coef": 1.5})
    online = losses.method("online_dpo")
    hyper = losses.hyperparameters(online, {"loss_type": "ipo", "missing_eos_penalty": "2"})
    assert hyper["missing_eos_penalty"] == 2.0
    assert online_pairs.online_loss_type(hyper["loss_type"]) == "ipo"
    # The config check (`hyperparameters`) already rejects what `mixture` would take.
    for method, value in [("online_dpo", "hinge"), ("xpo", "sigmoid,ipo")]:
        with pytest.raises(InputError, match=f"{method}: loss_type={value}: .* sigmoid or ipo"):
            losses.hyperparameters(losses.method(method), {"loss_type": value})
    batch = _batch(seed=3)
    with pytest.raises(InputError, match="online_dpo and xpo take sigmoid or ipo"):
        online.loss(
            token_logps=_tensor(batch["logprobs"]),
            token_mask=torch.tensor(batch["mask"]).bool(),
            ref_token_logps=_tensor(batch["ref_logprobs"]),
            preferences=torch.full((P,), 0.5),
            loss_type="hinge",
        )


def online_pairs_names() -> tuple[str, ...]:
    return ("online_dpo", "xpo", "nash_md")
