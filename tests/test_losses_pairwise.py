"""Pairwise preference losses against independent numpy transcriptions of their sources.

Every `trl_*` function below is transcribed by hand, in float64 numpy, from the source it cites;
none calls the code under test. Sources (read from the released wheels on PyPI, which are the
tagged releases):

- TRL 0.19.1 (tag v0.19.1), trl/trainer/dpo_trainer.py: `DPOTrainer.dpo_loss` (l. 969-1150:
  `sigmoid` with label_smoothing, `bco_pair` with `self.running`), `concatenated_forward`
  (l. 1546-1556: `nll_loss` = token-mean cross-entropy over the chosen completions),
  `get_batch_loss_metrics` (l. 1634: `losses + rpo_alpha * nll_loss`); trl/trainer/utils.py
  `RunningMoments.update` (l. 716-754).
- TRL 1.16.0 (tag v1.16.0), trl/trainer/dpo_trainer.py: the loss loop of
  `DPOTrainer._compute_loss` (l. 1384-1510: robust, hinge, ipo, exo_pair, nca_pair, sppo_hard,
  aot, aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm);
  trl/experimental/cpo/cpo_trainer.py `CPOTrainer.cpo_loss` (l. 678-750) with
  `average_log_prob=self.loss_type in ["ipo", "simpo"]` (l. 850) and `loss = losses.mean() +
  cpo_alpha * nll` (l. 890); trl/experimental/orpo/orpo_trainer.py `log1mexp` (l. 87-91),
  `odds_ratio_loss` (l. 670-702), `average_log_prob=True` (l. 805), `loss = nll - losses.mean()`
  (l. 848). The same ORPO formula is in huggingface/trl@00cdca7bd3c6711e55666dffda0a0f892eaf5679.
  ORPO's `concatenated_forward` takes its NLL labels from `concatenated_input_ids` where
  `attention_mask == 1` ("orpo chosen nll loss is computed over the full prompt and response"),
  while CPO's uses `concatenated_labels` (prompt at -100).
- ASFT (not in TRL): turbo-llm/turbo-alignment@01c0ab630a7af957f5542543ff3f70e2cf5edfed,
  turbo_alignment/trainers/dpo.py `ASFTLoss.compute_loss`; a later revision of that class adds
  `beta` inside the sigmoids, `lambda_` and `ce_coef`, which is what is transcribed.

The last section (TRL 1.x: f-divergence scores, LD-DPO's `ld_alpha`, `loss_type` mixtures with
`loss_weights`, AlphaPO's `alpha` in CPO/SimPO) transcribes in plain torch instead; its sources
are named there.

Where TRL's loss holds a batch-level NLL (RPO, CPO, SimPO's cpo_alpha, ORPO) the transcription
adds TRL's scalar token-mean NLL, −Σ lp / Σ n over the batch, to every row as TRL does; the code
splits the same quantity by rows (−lp_b·B/Σ n), so those cases compare batch means, and the
token-level tests below rebuild TRL's cross-entropy from per-token log-probs.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalharness.errors import InputError
from evalharness.trainers import losses
from evalharness.trainers.losses import pairwise

B = 7
NAMES = {
    "dpo": True,
    "robust": True,
    "hinge": True,
    "ipo": True,
    "exo_pair": True,
    "nca_pair": True,
    "bco_pair": True,
    "sppo_hard": True,
    "aot": True,
    "aot_unpaired": True,
    "apo_zero": True,
    "apo_down": True,
    "discopop": True,
    "sigmoid_norm": True,
    "cpo": False,
    "simpo": False,
    "orpo": False,
    "asft_aligned": False,
    "mixture": True,
}  # name -> needs a reference model


# --- numpy helpers (float64) ---------------------------------------------------------------------


def logsigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(logsigmoid(x))


def make_batch(seed: int, size: int = B) -> dict[str, np.ndarray]:
    """Sums like −U(20, 80) and integer lengths 5-40, as the loop would hand them over."""
    rng = np.random.default_rng(seed)
    sums = {
        key: -rng.uniform(20.0, 80.0, size)
        for key in ("pc", "pr", "rc", "rr")  # policy/ref x chosen/rejected
    }
    sums["lc"] = rng.integers(5, 41, size).astype(np.float64)
    sums["lr"] = rng.integers(5, 41, size).astype(np.float64)
    # ORPO's NLL tokens: the chosen completion plus 3-30 prompt tokens of their own log-probs.
    sums["pf"] = sums["pc"] - rng.uniform(5.0, 60.0, size)
    sums["lf"] = sums["lc"] + rng.integers(3, 31, size)
    return sums


def as_inputs(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    names = {
        "pc": "policy_chosen_logps",
        "pr": "policy_rejected_logps",
        "rc": "ref_chosen_logps",
        "rr": "ref_rejected_logps",
        "lc": "chosen_lengths",
        "lr": "rejected_lengths",
        "pf": "policy_chosen_full_logps",
        "lf": "chosen_full_lengths",
    }
    return {names[k]: torch.tensor(v, dtype=torch.float64) for k, v in batch.items()}


def call(name: str, inputs: dict[str, torch.Tensor], **hyper: float) -> torch.Tensor:
    """Call a loss the way the loop does: only the inputs its signature names."""
    loss = getattr(pairwise, name)
    wanted = inspect.signature(loss).parameters
    return loss(**{k: v for k, v in inputs.items() if k in wanted}, **hyper)


# --- transcriptions of the sources ---------------------------------------------------------------


def trl_dpo(b, beta, label_smoothing=0.0, rpo_alpha=0.0):
    """0.19.1 dpo_loss `sigmoid` + get_batch_loss_metrics `rpo_alpha * nll_loss` (per example)."""
    logratios = b["pc"] - b["pr"]
    ref_logratios = b["rc"] - b["rr"]
    logits = logratios - ref_logratios
    losses = (
        -logsigmoid(beta * logits) * (1 - label_smoothing)
        - logsigmoid(-beta * logits) * label_smoothing
    )
    return losses + rpo_alpha * trl_token_mean_nll(b["pc"], b["lc"])


def trl_token_mean_nll(chosen_sums, chosen_lengths):
    """`F.cross_entropy` (mean) over every scored chosen token of the batch, as a scalar that TRL
    adds to every row: −Σ_b lp_b / Σ_b n_b."""
    return -chosen_sums.sum() / chosen_lengths.sum()


def trl_robust(b, beta, label_smoothing):
    """1.16.0 `robust`."""
    delta_score = (b["pc"] - b["rc"]) - (b["pr"] - b["rr"])
    clean_loss_term = -(1 - label_smoothing) * logsigmoid(beta * delta_score)
    flipped_loss_term = -label_smoothing * logsigmoid(-beta * delta_score)
    return (clean_loss_term - flipped_loss_term) / (1 - 2 * label_smoothing)


def trl_hinge(b, beta):
    """1.16.0 `hinge`."""
    delta_score = (b["pc"] - b["rc"]) - (b["pr"] - b["rr"])
    return np.maximum(0.0, 1 - beta * delta_score)


def trl_ipo(b, beta):
    """1.16.0 `ipo`: scores divided by completion_mask sums clamped to >= 1."""
    chosen_avg_score = (b["pc"] - b["rc"]) / np.maximum(b["lc"], 1.0)
    rejected_avg_score = (b["pr"] - b["rr"]) / np.maximum(b["lr"], 1.0)
    ipo_delta = chosen_avg_score - rejected_avg_score
    return (ipo_delta - 1 / (2 * beta)) ** 2


def trl_exo_pair(b, beta, label_smoothing):
    """1.16.0 `exo_pair`."""
    delta_score = (b["pc"] - b["rc"]) - (b["pr"] - b["rr"])
    epsilon = label_smoothing
    qw = sigmoid(beta * delta_score)
    log_qw = logsigmoid(beta * delta_score)
    log_pw = np.log1p(-epsilon)
    ql = sigmoid(-beta * delta_score)
    log_ql = logsigmoid(-beta * delta_score)
    log_pl = np.log(epsilon)
    return qw * (log_qw - log_pw) + ql * (log_ql - log_pl)


def trl_nca_pair(b, beta):
    """1.16.0 `nca_pair`."""
    chosen_rewards = beta * (b["pc"] - b["rc"])
    rejected_rewards = beta * (b["pr"] - b["rr"])
    return (
        -logsigmoid(chosen_rewards)
        - 0.5 * logsigmoid(-chosen_rewards)
        - 0.5 * logsigmoid(-rejected_rewards)
    )


class TrlRunningMoments:
    """0.19.1 utils.RunningMoments.update, single process (only the mean matters here)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    def update(self, xs: np.ndarray) -> None:
        xs = np.atleast_1d(xs)
        xs_count, xs_mean, xs_var = xs.size, xs.mean(), xs.var()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
        self.mean += delta * xs_count / tot_count
        self.var = (old_sum + xs_var * xs_count) / tot_count
        self.count = tot_count


def trl_bco_pair(b, beta, running: TrlRunningMoments):
    """0.19.1 `bco_pair`: running.update(batch mean reward) BEFORE the loss uses running.mean."""
    chosen_logratios = b["pc"] - b["rc"]
    rejected_logratios = b["pr"] - b["rr"]
    rewards = np.concatenate((beta * chosen_logratios, beta * rejected_logratios)).mean()
    running.update(rewards)
    delta = running.mean
    return -logsigmoid(beta * chosen_logratios - delta) - logsigmoid(
        -(beta * rejected_logratios - delta)
    )


def trl_sppo_hard(b, beta):
    """1.16.0 `sppo_hard`."""
    winner_margin_error = ((b["pc"] - b["rc"]) - 0.5 / beta) ** 2
    loser_margin_error = ((b["pr"] - b["rr"]) + 0.5 / beta) ** 2
    return winner_margin_error + loser_margin_error


def trl_aot(b, beta, label_smoothing=0.0):
    """1.16.0 `aot`: sorted policy log-ratios minus sorted reference log-ratios."""
    logratios_sorted = np.sort(b["pc"] - b["pr"])
    ref_logratios_sorted = np.sort(b["rc"] - b["rr"])
    delta = logratios_sorted - ref_logratios_sorted
    return (
        -logsigmoid(beta * delta) * (1 - label_smoothing)
        - logsigmoid(-beta * delta) * label_smoothing
    )


def trl_aot_unpaired(b, beta, label_smoothing=0.0):
    """1.16.0 `aot_unpaired`: sorted chosen log-ratios minus sorted rejected log-ratios."""
    chosen_logratios_sorted = np.sort(b["pc"] - b["rc"])
    rejected_logratios_sorted = np.sort(b["pr"] - b["rr"])
    delta = chosen_logratios_sorted - rejected_logratios_sorted
    return (
        -logsigmoid(beta * delta) * (1 - label_smoothing)
        - logsigmoid(-beta * delta) * label_smoothing
    )


def trl_apo_zero(b, beta):
    """1.16.0 `apo_zero`."""
    losses_chosen = 1 - sigmoid(beta * (b["pc"] - b["rc"]))
    losses_rejected = sigmoid(beta * (b["pr"] - b["rr"]))
    return losses_chosen + losses_rejected


def trl_apo_down(b, beta):
    """1.16.0 `apo_down`."""
    chosen_logratios = b["pc"] - b["rc"]
    rejected_logratios = b["pr"] - b["rr"]
    losses_chosen = sigmoid(beta * chosen_logratios)
    losses_rejected = 1 - sigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses_chosen + losses_rejected


def trl_discopop(b, beta, discopop_tau):
    """1.16.0 `discopop`."""
    delta_score = (b["pc"] - b["rc"]) - (b["pr"] - b["rr"])
    logits = delta_score * beta
    log_ratio_modulation = sigmoid(logits / discopop_tau)
    logistic_component = -logsigmoid(logits)
    exp_component = np.exp(-logits)
    return logistic_component * (1 - log_ratio_modulation) + exp_component * log_ratio_modulation


def trl_sigmoid_norm(b, beta):
    """1.16.0 `sigmoid_norm`."""
    chosen_avg_score = (b["pc"] - b["rc"]) / np.maximum(b["lc"], 1.0)
    rejected_avg_score = (b["pr"] - b["rr"]) / np.maximum(b["lr"], 1.0)
    delta = chosen_avg_score - rejected_avg_score
    return -logsigmoid(beta * delta)


def trl_cpo_loss(chosen, rejected, beta, label_smoothing, loss_type, simpo_gamma=0.5):
    """1.16.0 experimental CPOTrainer.cpo_loss (alpha = 0, the AlphaPO transform off)."""
    logits = chosen - rejected
    if loss_type == "simpo":
        gamma_logratios = simpo_gamma / beta
        logits = logits - gamma_logratios
    return (
        -logsigmoid(beta * logits) * (1 - label_smoothing)
        - logsigmoid(-beta * logits) * label_smoothing
    )


def trl_cpo(b, beta, label_smoothing, cpo_alpha):
    """`sigmoid`: summed log-probs (average_log_prob False), plus cpo_alpha * NLL."""
    losses = trl_cpo_loss(b["pc"], b["pr"], beta, label_smoothing, "sigmoid")
    return losses + cpo_alpha * trl_token_mean_nll(b["pc"], b["lc"])


def trl_simpo(b, beta, simpo_gamma, label_smoothing, cpo_alpha):
    """`simpo`: get_batch_logps(average_log_prob=True) = sum / number of completion tokens."""
    chosen, rejected = b["pc"] / b["lc"], b["pr"] / b["lr"]
    losses = trl_cpo_loss(chosen, rejected, beta, label_smoothing, "simpo", simpo_gamma)
    return losses + cpo_alpha * trl_token_mean_nll(b["pc"], b["lc"])


def trl_log1mexp(x):
    """1.16.0 experimental/orpo/orpo_trainer.py `log1mexp`."""
    t = -0.6931471805599453
    return np.where(x < t, np.log1p(-np.exp(np.minimum(x, t))), np.log(-np.expm1(np.maximum(x, t))))


def trl_orpo(b, beta):
    """odds_ratio_loss on averaged completion log-probs; `loss = nll - losses.mean()` with the
    NLL over prompt + chosen tokens (`pf`, `lf`)."""
    policy_chosen_logps, policy_rejected_logps = b["pc"] / b["lc"], b["pr"] / b["lr"]
    log_odds = (policy_chosen_logps - policy_rejected_logps) - (
        trl_log1mexp(policy_chosen_logps) - trl_log1mexp(policy_rejected_logps)
    )
    ratio = logsigmoid(log_odds)
    losses = beta * ratio
    return trl_token_mean_nll(b["pf"], b["lf"]) - losses


def turbo_asft(b, beta, lambda_, ce_coef):
    """turbo-alignment ASFTLoss.compute_loss on averaged log-probs (its clamp is inert here)."""
    policy_chosen_logps, policy_rejected_logps = b["pc"] / b["lc"], b["pr"] / b["lr"]
    chosen_ratio = policy_chosen_logps - np.log1p(-np.exp(policy_chosen_logps))
    rejected_ratio = policy_rejected_logps - np.log1p(-np.exp(policy_rejected_logps))
    sigm_diff = -logsigmoid(beta * chosen_ratio) - logsigmoid(-beta * rejected_ratio)
    return -(ce_coef * policy_chosen_logps) + lambda_ * sigm_diff


# --- agreement with the transcriptions -----------------------------------------------------------

CASES = [
    ("dpo", dict(beta=0.1), lambda b: trl_dpo(b, 0.1)),
    ("dpo", dict(beta=0.3, label_smoothing=0.2), lambda b: trl_dpo(b, 0.3, 0.2)),
    ("dpo", dict(beta=0.1, rpo_alpha=1.0), lambda b: trl_dpo(b, 0.1, rpo_alpha=1.0)),
    ("robust", dict(beta=0.1, label_smoothing=0.1), lambda b: trl_robust(b, 0.1, 0.1)),
    ("hinge", dict(beta=0.01), lambda b: trl_hinge(b, 0.01)),
    ("ipo", dict(beta=0.5), lambda b: trl_ipo(b, 0.5)),
    ("exo_pair", dict(beta=0.1, label_smoothing=1e-3), lambda b: trl_exo_pair(b, 0.1, 1e-3)),
    ("nca_pair", dict(beta=0.1), lambda b: trl_nca_pair(b, 0.1)),
    ("sppo_hard", dict(beta=0.1), lambda b: trl_sppo_hard(b, 0.1)),
    ("aot", dict(beta=0.1), lambda b: trl_aot(b, 0.1)),
    ("aot", dict(beta=0.2, label_smoothing=0.1), lambda b: trl_aot(b, 0.2, 0.1)),
    ("aot_unpaired", dict(beta=0.1), lambda b: trl_aot_unpaired(b, 0.1)),
    ("apo_zero", dict(beta=0.1), lambda b: trl_apo_zero(b, 0.1)),
    ("apo_down", dict(beta=0.1), lambda b: trl_apo_down(b, 0.1)),
    ("discopop", dict(beta=0.05, tau=0.05), lambda b: trl_discopop(b, 0.05, 0.05)),
    ("sigmoid_norm", dict(beta=2.0), lambda b: trl_sigmoid_norm(b, 2.0)),
    ("cpo", dict(beta=0.1, cpo_alpha=1.0), lambda b: trl_cpo(b, 0.1, 0.0, 1.0)),
    (
        "cpo",
        dict(beta=0.2, label_smoothing=0.1, cpo_alpha=0.5),
        lambda b: trl_cpo(b, 0.2, 0.1, 0.5),
    ),
    ("simpo", dict(beta=2.0, gamma=1.0), lambda b: trl_simpo(b, 2.0, 1.0, 0.0, 0.0)),
    (
        "simpo",
        dict(beta=0.1, gamma=0.5, label_smoothing=0.1, cpo_alpha=1.0),
        lambda b: trl_simpo(b, 0.1, 0.5, 0.1, 1.0),
    ),
    ("orpo", dict(beta=0.1), lambda b: trl_orpo(b, 0.1)),
    ("orpo", dict(beta=1.0), lambda b: trl_orpo(b, 1.0)),
    ("asft_aligned", dict(), lambda b: turbo_asft(b, 1.0, 1.0, 1.0)),
    (
        "asft_aligned",
        dict(beta=0.5, lam=0.1, nll_weight=0.0),
        lambda b: turbo_asft(b, 0.5, 0.1, 0.0),
    ),
]


def _has_batch_nll(name: str, hyper: dict) -> bool:
    """TRL adds a batch-level scalar NLL here, which the code splits by rows: compare means."""
    return name == "orpo" or (
        name in ("dpo", "cpo", "simpo")
        and bool(hyper.get("rpo_alpha", hyper.get("cpo_alpha", 1.0 if name == "cpo" else 0.0)))
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("name", "hyper", "reference"), CASES)
def test_matches_source_per_example(name: str, hyper: dict, reference, seed: int) -> None:
    batch = make_batch(seed)
    got = call(name, as_inputs(batch), **hyper)
    assert got.shape == (B,) and got.dtype == torch.float64
    expected = reference(batch)
    if _has_batch_nll(name, hyper):
        got, expected = got.mean().reshape(1), np.atleast_1d(expected.mean())
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_bco_pair_matches_trl_running_mean_over_steps() -> None:
    """The loop protocol: fold the batch's mean β·[r_w; r_l] into δ first, then call the loss."""
    beta, running = 0.1, TrlRunningMoments()
    delta_total, steps = 0.0, 0
    for seed in (3, 4, 5):
        batch = make_batch(seed)
        expected = trl_bco_pair(batch, beta, running)
        step_mean = beta * np.concatenate((batch["pc"] - batch["rc"], batch["pr"] - batch["rr"]))
        delta_total, steps = delta_total + step_mean.mean(), steps + 1
        delta = torch.tensor(delta_total / steps, dtype=torch.float64)
        got = call("bco_pair", as_inputs(batch), beta=beta, delta=delta)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_bco_pair_with_zero_delta_is_trl_1x() -> None:
    """TRL 1.16 `bco_pair`: −log σ(βr_w) − log σ(−βr_l), no running mean."""
    batch = make_batch(6)
    r_w, r_l = 0.1 * (batch["pc"] - batch["rc"]), 0.1 * (batch["pr"] - batch["rr"])
    got = call("bco_pair", as_inputs(batch), beta=0.1, delta=torch.tensor(0.0))
    np.testing.assert_allclose(got.numpy(), -logsigmoid(r_w) - logsigmoid(-r_l), rtol=1e-6)


# --- NLL terms: TRL's cross-entropy over the batch's tokens, rebuilt from logits ------------------

# Three chosen rows, positions already aligned with their targets: prompt tokens, then completion
# tokens, then padding. Completion lengths 1, 6, 2 and prompt lengths 2, 4, 1 differ on purpose:
# a mean of per-example means and the token mean over the batch then disagree.
PROMPT_LENGTHS, COMPLETION_LENGTHS, WIDTH, VOCAB = (2, 4, 1), (1, 6, 2), 10, 5


def _chosen_tokens() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits `[3, T, V]` (leaf), targets, and the completion / attended masks `[3, T]`."""
    generator = torch.Generator().manual_seed(20)
    logits = torch.randn(3, WIDTH, VOCAB, generator=generator, dtype=torch.float64) * 2
    targets = torch.randint(0, VOCAB, (3, WIDTH), generator=generator)
    completion = torch.zeros(3, WIDTH, dtype=torch.bool)
    attended = torch.zeros(3, WIDTH, dtype=torch.bool)
    for row, (prompt, answer) in enumerate(zip(PROMPT_LENGTHS, COMPLETION_LENGTHS, strict=True)):
        completion[row, prompt : prompt + answer] = True
        attended[row, : prompt + answer] = True
    # The short answer's token is unlikely, the long answer's tokens likely (as in real data).
    target_logits = logits.gather(-1, targets[..., None]).squeeze(-1)
    shift = torch.zeros(3, WIDTH, dtype=torch.float64)
    shift[0], shift[1] = -6.0, 4.0
    target_logits = target_logits + shift * completion
    logits = logits.scatter(-1, targets[..., None], target_logits[..., None])
    return logits.requires_grad_(True), targets, completion, attended


def _trl_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor):
    """TRL's `F.cross_entropy(logits.flatten(0, 1), labels.flatten())`, labels -100 off `mask`."""
    labels = torch.where(mask, targets, torch.full_like(targets, -100))
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def _pair_inputs(logits, targets, completion, attended) -> dict[str, torch.Tensor]:
    """What the loop hands a pairwise loss: sums and counts of the scored tokens per row."""
    token_logps = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    return {
        "policy_chosen_logps": (token_logps * completion).sum(-1),
        "chosen_lengths": completion.sum(-1).to(torch.float64),
        "policy_chosen_full_logps": (token_logps * attended).sum(-1),
        "chosen_full_lengths": attended.sum(-1).to(torch.float64),
        "policy_rejected_logps": torch.tensor([-9.0, -14.0, -4.0], dtype=torch.float64),
        "rejected_lengths": torch.tensor([3.0, 7.0, 2.0], dtype=torch.float64),
        "ref_chosen_logps": torch.tensor([-7.0, -11.0, -6.0], dtype=torch.float64),
        "ref_rejected_logps": torch.tensor([-8.0, -12.0, -5.0], dtype=torch.float64),
    }


def _dpo_rows(inputs: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    h = (inputs["policy_chosen_logps"] - inputs["ref_chosen_logps"]) - (
        inputs["policy_rejected_logps"] - inputs["ref_rejected_logps"]
    )
    return -F.logsigmoid(beta * h)


def _assert_same_value_and_gradient(got: torch.Tensor, expected: torch.Tensor, logits) -> None:
    (got_grad,) = torch.autograd.grad(got, logits, retain_graph=True)
    (expected_grad,) = torch.autograd.grad(expected, logits, retain_graph=True)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_fixture_separates_the_two_nll_means() -> None:
    """The per-example mean (the old code's) and TRL's token mean differ on this fixture."""
    logits, targets, completion, attended = _chosen_tokens()
    inputs = _pair_inputs(logits, targets, completion, attended)
    per_example = (-inputs["policy_chosen_logps"] / inputs["chosen_lengths"]).mean().detach()
    token_mean = _trl_cross_entropy(logits, targets, completion).detach()
    assert float(per_example - token_mean) > 1.0, (per_example, token_mean)


@pytest.mark.parametrize("rpo_alpha", [1.0, 0.5])
def test_rpo_alpha_is_trls_token_mean_nll_over_chosen_completions(rpo_alpha: float) -> None:
    """TRL 0.19.1: `losses + rpo_alpha * nll_loss`, nll_loss = cross-entropy over the chosen
    completion tokens of the whole batch (prompt masked); the batch loss is the mean."""
    logits, targets, completion, attended = _chosen_tokens()
    inputs = _pair_inputs(logits, targets, completion, attended)
    expected = (
        _dpo_rows(inputs, 0.1) + rpo_alpha * _trl_cross_entropy(logits, targets, completion)
    ).mean()
    got = call("dpo", inputs, beta=0.1, rpo_alpha=rpo_alpha).mean()
    _assert_same_value_and_gradient(got, expected, logits)


def test_cpo_and_simpo_cpo_alpha_are_trls_token_mean_nll_over_chosen_completions() -> None:
    """TRL CPOTrainer: `losses.mean() + cpo_alpha * nll_loss`, labels = `concatenated_labels`."""
    logits, targets, completion, attended = _chosen_tokens()
    inputs = _pair_inputs(logits, targets, completion, attended)
    nll = _trl_cross_entropy(logits, targets, completion)
    chosen, rejected = inputs["policy_chosen_logps"], inputs["policy_rejected_logps"]
    cpo_rows = -F.logsigmoid(0.1 * (chosen - rejected))
    got = call("cpo", inputs, beta=0.1, cpo_alpha=1.0).mean()
    _assert_same_value_and_gradient(got, cpo_rows.mean() + 1.0 * nll, logits)
    mean_w, mean_l = chosen / inputs["chosen_lengths"], rejected / inputs["rejected_lengths"]
    simpo_rows = -F.logsigmoid(2.0 * (mean_w - mean_l - 1.0 / 2.0))
    got = call("simpo", inputs, beta=2.0, gamma=1.0, cpo_alpha=0.5).mean()
    _assert_same_value_and_gradient(got, simpo_rows.mean() + 0.5 * nll, logits)


def test_orpo_nll_is_trls_token_mean_over_prompt_and_chosen_tokens() -> None:
    """TRL ORPOTrainer: `loss = nll - losses.mean()`, the NLL's labels being every attended
    chosen token (prompt included), the odds on completion-only mean log-probs."""
    logits, targets, completion, attended = _chosen_tokens()
    inputs = _pair_inputs(logits, targets, completion, attended)
    mean_w = inputs["policy_chosen_logps"] / inputs["chosen_lengths"]
    mean_l = inputs["policy_rejected_logps"] / inputs["rejected_lengths"]
    log_odds = (mean_w - mean_l) - (
        torch.log1p(-torch.exp(mean_w)) - torch.log1p(-torch.exp(mean_l))
    )
    expected = _trl_cross_entropy(logits, targets, attended) - (0.1 * F.logsigmoid(log_odds)).mean()
    got = call("orpo", inputs, beta=0.1).mean()
    _assert_same_value_and_gradient(got, expected, logits)
    completion_only = _trl_cross_entropy(logits, targets, completion)
    with_prompt = _trl_cross_entropy(logits, targets, attended)
    assert abs(float((completion_only - with_prompt).detach())) > 0.1


def test_pairwise_inputs_full_chosen_scores_the_prompt_too() -> None:
    """`full_chosen` labels every attended token after the first (TRL's ORPO labels, shifted);
    the completion sums read off that forward are those of the ordinary forward."""
    from evalharness.trainers.inputs import pairwise_inputs
    from evalharness.trainers.models import scored_mask

    input_ids = torch.tensor(
        [[5, 6, 7, 8, 0], [5, 9, 0, 0, 0], [4, 3, 2, 0, 0], [4, 3, 1, 1, 2]]
    )  # rows 0-1 chosen, 2-3 rejected; prompt = the first two tokens
    attention_mask = (torch.arange(5) < torch.tensor([[4], [2], [3], [5]])).long()
    labels = torch.where(
        (torch.arange(5) >= 2) & attention_mask.bool(), input_ids, torch.tensor(-100)
    )
    labels[1, 1] = 9  # row 1: a one-token prompt

    def scorer(ids, mask, scored_labels):
        """log p(token t+1) = −(id + position)/10 at each labelled position, 0 elsewhere."""
        next_ids = torch.cat([ids[:, 1:], ids[:, :1]], dim=1).double()
        values = -(next_ids + torch.arange(ids.shape[1])) / 10
        return values * scored_mask(scored_labels), None

    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    plain = pairwise_inputs(scorer, batch, None)
    full = pairwise_inputs(scorer, batch, None, full_chosen=True)
    for key, value in plain.items():
        torch.testing.assert_close(full[key], value)
    assert "policy_chosen_full_logps" not in plain
    # Chosen row 0 scores tokens 6, 7, 8 at positions 0-2; row 1 scores token 9 at position 0.
    expected = torch.tensor([-(6 + 0 + 7 + 1 + 8 + 2) / 10, -(9 + 0) / 10], dtype=torch.float64)
    torch.testing.assert_close(full["policy_chosen_full_logps"], expected)
    torch.testing.assert_close(full["chosen_full_lengths"], torch.tensor([3.0, 1.0]).double())
    torch.testing.assert_close(full["chosen_lengths"], torch.tensor([2.0, 1.0]).double())


# --- gradients -----------------------------------------------------------------------------------


def _grad_inputs(seed: int, size: int = 3) -> dict[str, torch.Tensor]:
    inputs = as_inputs(make_batch(seed, size))
    for key in ("policy_chosen_logps", "policy_rejected_logps"):
        inputs[key] = (inputs[key] / 10).requires_grad_(True)  # keep β·h moderate
    return inputs


@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("dpo", dict(beta=0.5)),
        ("dpo", dict(beta=0.5, label_smoothing=0.2, rpo_alpha=1.0)),
        ("ipo", dict(beta=0.5)),
        ("orpo", dict(beta=0.5)),
        ("asft_aligned", dict(beta=0.7, lam=0.5)),
    ],
)
def test_gradcheck(name: str, hyper: dict) -> None:
    inputs = _grad_inputs(8)
    policy = (inputs["policy_chosen_logps"], inputs["policy_rejected_logps"])

    def loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        moved = {**inputs, "policy_chosen_logps": chosen, "policy_rejected_logps": rejected}
        return call(name, moved, **hyper)

    assert torch.autograd.gradcheck(loss, policy)


def test_dpo_gradient_is_beta_sigma_of_negative_margin() -> None:
    """d/d lp_w of −log σ(βh) is −β·σ(−βh): the DPO weighting of badly ranked pairs."""
    inputs = _grad_inputs(9)
    call("dpo", inputs, beta=0.5).sum().backward()
    h = (inputs["policy_chosen_logps"] - inputs["ref_chosen_logps"]) - (
        inputs["policy_rejected_logps"] - inputs["ref_rejected_logps"]
    )
    expected = -0.5 * torch.sigmoid(-0.5 * h.detach())
    torch.testing.assert_close(inputs["policy_chosen_logps"].grad, expected)


# --- properties ----------------------------------------------------------------------------------


def test_dpo_is_log2_when_policy_equals_reference() -> None:
    inputs = as_inputs(make_batch(10))
    inputs["ref_chosen_logps"] = inputs["policy_chosen_logps"].clone()
    inputs["ref_rejected_logps"] = inputs["policy_rejected_logps"].clone()
    torch.testing.assert_close(
        call("dpo", inputs), torch.full((B,), math.log(2.0), dtype=torch.float64)
    )


MONOTONE = [
    ("dpo", {}),
    ("dpo", dict(label_smoothing=0.1, rpo_alpha=1.0)),
    ("robust", dict(label_smoothing=0.1)),
    ("hinge", {}),
    ("ipo", {}),
    ("exo_pair", {}),
    ("nca_pair", {}),
    ("bco_pair", dict(delta=torch.tensor(0.0, dtype=torch.float64))),
    ("sppo_hard", {}),
    ("aot", {}),
    ("aot_unpaired", {}),
    ("apo_zero", {}),
    ("sigmoid_norm", {}),
    ("cpo", {}),
    ("simpo", {}),
    ("orpo", {}),
    ("asft_aligned", {}),
]  # discopop and apo_down are not monotone in the chosen log-prob near h = 0 by design


@pytest.mark.parametrize(("name", "hyper"), MONOTONE)
def test_raising_chosen_lowers_every_loss(name: str, hyper: dict) -> None:
    """From policy = reference (and chosen = rejected), a higher chosen log-prob must help."""
    batch = make_batch(11)
    batch["rc"], batch["pr"], batch["rr"] = (
        batch["pc"].copy(),
        batch["pc"].copy(),
        batch["pc"].copy(),
    )
    batch["lr"] = batch["lc"].copy()
    before = call(name, as_inputs(batch), **hyper)
    batch["pc"] = batch["pc"] + 0.5
    after = call(name, as_inputs(batch), **hyper)
    assert torch.all(after < before), (before, after)


def test_label_smoothing_zero_is_plain_dpo_and_nonzero_is_not() -> None:
    inputs = as_inputs(make_batch(12))
    h = (inputs["policy_chosen_logps"] - inputs["ref_chosen_logps"]) - (
        inputs["policy_rejected_logps"] - inputs["ref_rejected_logps"]
    )
    plain = -torch.nn.functional.logsigmoid(0.1 * h)
    torch.testing.assert_close(call("dpo", inputs, label_smoothing=0.0), plain)
    assert not torch.allclose(call("dpo", inputs, label_smoothing=0.1), plain)


def test_robust_is_dpo_at_zero_and_differs_from_dpo_and_cdpo_otherwise() -> None:
    inputs = as_inputs(make_batch(13))
    torch.testing.assert_close(call("robust", inputs), call("dpo", inputs))
    robust = call("robust", inputs, label_smoothing=0.2)
    assert not torch.allclose(robust, call("dpo", inputs))
    assert not torch.allclose(robust, call("dpo", inputs, label_smoothing=0.2))


def test_aot_values_belong_to_sorted_positions_not_rows() -> None:
    """Permuting the batch's rows leaves AOT's output untouched; a row-wise loss would move."""
    inputs = as_inputs(make_batch(14))
    order = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    shuffled = {k: v[order] for k, v in inputs.items()}
    for name in ("aot", "aot_unpaired"):
        torch.testing.assert_close(call(name, shuffled), call(name, inputs))
    assert not torch.allclose(call("dpo", shuffled), call("dpo", inputs))


def test_length_normalised_losses_ignore_a_common_length_scale() -> None:
    """Doubling every sum and every length leaves ℓ̄ and so these losses unchanged."""
    batch = make_batch(15)
    doubled = {k: 2 * v for k, v in batch.items()}
    for name in ("ipo", "sigmoid_norm", "simpo", "orpo", "asft_aligned"):
        torch.testing.assert_close(call(name, as_inputs(doubled)), call(name, as_inputs(batch)))


def test_orpo_and_asft_stay_finite_near_probability_one() -> None:
    """ℓ̄ → 0⁻ (P → 1) is where naive log(1 − eˣ) cancels; the stable form keeps a gradient."""
    inputs = as_inputs(make_batch(16, 3))
    inputs["policy_chosen_logps"] = torch.tensor([-1e-6, -1e-3, -0.5], dtype=torch.float64)
    inputs["policy_chosen_logps"].requires_grad_(True)
    for name in ("orpo", "asft_aligned"):
        value = call(name, inputs).sum()
        (grad,) = torch.autograd.grad(value, inputs["policy_chosen_logps"])
        assert torch.isfinite(value) and torch.all(torch.isfinite(grad))


@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("robust", dict(label_smoothing=0.5)),
        ("robust", dict(label_smoothing=-0.1)),
        ("exo_pair", dict(label_smoothing=0.0)),
        ("exo_pair", dict(label_smoothing=1.0)),
    ],
)
def test_out_of_range_smoothing_is_an_input_error(name: str, hyper: dict) -> None:
    with pytest.raises(InputError, match="label_smoothing"):
        call(name, as_inputs(make_batch(17)), **hyper)


# --- registry ------------------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch):
    """The real registry; families other engineers have not written yet are left out, not faked."""
    present = []
    for family in losses.FAMILIES:
        try:
            __import__(f"{losses.__name__}.{family}")
        except ModuleNotFoundError as error:
            if error.name != f"{losses.__name__}.{family}":
                raise
            continue
        present.append(family)
    monkeypatch.setattr(losses, "FAMILIES", tuple(present))
    return losses


def test_get_returns_the_functions(registry) -> None:
    assert registry.get("dpo") is pairwise.dpo
    assert registry.method("cpo").needs_reference is False
    assert registry.method("dpo").needs_reference is True


@pytest.mark.parametrize(("name", "needs_reference"), NAMES.items())
def test_every_method_is_registered_as_pairwise(registry, name: str, needs_reference: bool) -> None:
    method = registry.method(name)
    assert method.loss is getattr(pairwise, name)
    assert method.data_format == "pairwise"
    assert method.needs_reference is needs_reference
    assert method.summary and "\n" not in method.summary
    refs = {"ref_chosen_logps", "ref_rejected_logps"}
    assert refs <= set(method.inputs) if needs_reference else not refs & set(method.inputs)


#: Inputs the loop gives only when an option asks for them (LD-DPO's unweighted chosen sums).
OPTIONAL_INPUTS = {"policy_chosen_nll_logps"}


@pytest.mark.parametrize("name", NAMES)
def test_inputs_have_no_default_and_hyperparameters_do(registry, name: str) -> None:
    """The loop computes every input (none optional but LD-DPO's unweighted sums); a user may
    leave any hyperparameter out."""
    method = registry.method(name)
    parameters = inspect.signature(method.loss).parameters
    required = [p for p in method.inputs if p not in OPTIONAL_INPUTS]
    assert all(parameters[p].default is inspect.Parameter.empty for p in required)
    assert all(parameters[p].default is None for p in set(method.inputs) & OPTIONAL_INPUTS)
    assert all(v is not inspect.Parameter.empty for v in method.hyperparameters.values())
    assert "beta" in method.hyperparameters


def test_hyperparameter_names_the_trainer_exposes(registry) -> None:
    assert registry.method("dpo").hyperparameters == {
        "beta": 0.1,
        "label_smoothing": 0.0,
        "rpo_alpha": 0.0,
        "f_divergence_type": "reverse_kl",
        "f_alpha_divergence_coef": 1.0,
    }
    assert registry.method("dpo").input_options == {"ld_alpha": None}
    assert registry.method("cpo").input_options == {}
    assert registry.method("bco_pair").inputs[-1] == "delta"
    assert registry.method("simpo").hyperparameters == {
        "beta": 2.0,
        "gamma": 1.0,
        "label_smoothing": 0.0,
        "cpo_alpha": 0.0,
        "alpha": 0.0,
    }
    assert registry.method("cpo").hyperparameters["cpo_alpha"] == 1.0
    assert registry.method("discopop").hyperparameters["tau"] == 0.05


# --- TRL 1.x: f-divergence scores, LD-DPO, loss mixtures; AlphaPO in CPO/SimPO ------------------
#
# Transcribed in plain torch (float64), as written in huggingface/trl's 2026 source (TRL 1.x,
# read from the code index, not from a tagged wheel): trl/trainer/dpo_trainer.py
# `DPOTrainer._compute_loss` (the `ld_alpha` block on `per_token_logps`, the `f_divergence_type`
# block turning log-ratios into `chosen_scores`/`rejected_scores`, and the loop
# `for loss_type, loss_weight in zip(self.loss_types, self.loss_weights)` adding
# `per_sequence_loss.mean() * loss_weight`), and trl/experimental/cpo/cpo_trainer.py
# `CPOTrainer.cpo_loss` (AlphaPO: `(1 - chosen_probs.pow(-self.alpha)) / self.alpha`). One
# adaptation: TRL's alpha-divergence clamp table lists float16/bfloat16/float32 and computes in
# `.float()`; for these float64 tensors the transcription keeps float64 with the float32 cap 80.


def trl1x_scores(chosen_logratios, rejected_logratios, f_divergence_type, f_alpha_divergence_coef):
    """`_compute_loss`: log-ratios → chosen_scores, rejected_scores."""
    if f_divergence_type == "reverse_kl":  # standard DPO
        chosen_scores = chosen_logratios
        rejected_scores = rejected_logratios
    elif f_divergence_type == "forward_kl":
        # f'(t) = 1 - 1/t  -> drop constant -> -exp(-logratio)
        chosen_scores = -torch.exp(-chosen_logratios)
        rejected_scores = -torch.exp(-rejected_logratios)
    elif f_divergence_type == "js_divergence":
        # f'(t) = log(2t/(t+1)) -> drop log 2
        chosen_scores = F.logsigmoid(chosen_logratios)
        rejected_scores = F.logsigmoid(rejected_logratios)
    elif f_divergence_type == "alpha_divergence":
        # alpha-divergence: f'(t) = (t^(α-1) - 1)/(α-1)
        if abs(f_alpha_divergence_coef - 1.0) < 1e-6:
            chosen_scores = chosen_logratios
            rejected_scores = rejected_logratios
        else:
            coef = 1.0 / (f_alpha_divergence_coef - 1.0)
            t_chosen = (f_alpha_divergence_coef - 1.0) * chosen_logratios
            t_rejected = (f_alpha_divergence_coef - 1.0) * rejected_logratios
            dtype = t_chosen.dtype
            clamp_max = {torch.float16: 11.0, torch.bfloat16: 80.0, torch.float32: 80.0}.get(
                dtype, 80.0
            )
            wide = torch.float64 if dtype == torch.float64 else torch.float32
            t_chosen_float = torch.clamp(t_chosen.to(wide), max=clamp_max)
            t_rejected_float = torch.clamp(t_rejected.to(wide), max=clamp_max)
            chosen_scores = torch.exp(t_chosen_float).to(dtype) * coef
            rejected_scores = torch.exp(t_rejected_float).to(dtype) * coef
    else:
        raise ValueError(f"Unknown f_divergence_type: {f_divergence_type}")
    return chosen_scores, rejected_scores


def trl1x_per_sequence_loss(loss_type, t, beta, label_smoothing=0.0, discopop_tau=0.05):
    """One branch of `_compute_loss`'s loss loop; `t` holds its tensors by TRL's names."""
    chosen_scores, rejected_scores = t["chosen_scores"], t["rejected_scores"]
    chosen_logratios, rejected_logratios = t["chosen_logratios"], t["rejected_logratios"]
    delta_score = chosen_scores - rejected_scores
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta_score)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta_score)
    if loss_type == "ipo":
        chosen_avg_score = chosen_scores / t["chosen_len"].clamp(min=1.0)
        rejected_avg_score = rejected_scores / t["rejected_len"].clamp(min=1.0)
        ipo_delta = chosen_avg_score - rejected_avg_score
        return (ipo_delta - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":
        epsilon = torch.tensor(label_smoothing, dtype=torch.float64)
        qw = torch.sigmoid(beta * delta_score)
        log_qw = F.logsigmoid(beta * delta_score)
        log_pw = torch.log1p(-epsilon)
        ql = torch.sigmoid(-beta * delta_score)
        log_ql = F.logsigmoid(-beta * delta_score)
        log_pl = torch.log(epsilon)
        return qw * (log_qw - log_pw) + ql * (log_ql - log_pl)
    if loss_type == "nca_pair":
        chosen_rewards = beta * chosen_scores
        rejected_rewards = beta * rejected_scores
        return (
            -F.logsigmoid(chosen_rewards)
            - 0.5 * F.logsigmoid(-chosen_rewards)
            - 0.5 * F.logsigmoid(-rejected_rewards)
        )
    if loss_type == "robust":
        clean_loss_term = -(1 - label_smoothing) * F.logsigmoid(beta * delta_score)
        flipped_loss_term = -label_smoothing * F.logsigmoid(-beta * delta_score)
        return (clean_loss_term - flipped_loss_term) / (1 - 2 * label_smoothing)
    if loss_type == "bco_pair":
        chosen_rewards = beta * chosen_scores
        rejected_rewards = beta * rejected_scores
        return -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)
    if loss_type == "sppo_hard":
        winner_margin_error = (chosen_scores - 0.5 / beta) ** 2
        loser_margin_error = (rejected_scores + 0.5 / beta) ** 2
        return winner_margin_error + loser_margin_error
    if loss_type == "aot":
        logratios = t["chosen_logps"] - t["rejected_logps"]
        ref_logratios = t["ref_chosen_logps"] - t["ref_rejected_logps"]
        delta = torch.sort(logratios, dim=0)[0] - torch.sort(ref_logratios, dim=0)[0]
        return (
            -F.logsigmoid(beta * delta) * (1 - label_smoothing)
            - F.logsigmoid(-beta * delta) * label_smoothing
        )
    if loss_type == "apo_zero":
        losses_chosen = 1 - torch.sigmoid(beta * chosen_logratios)
        losses_rejected = torch.sigmoid(beta * rejected_logratios)
        return losses_chosen + losses_rejected
    if loss_type == "apo_down":
        losses_chosen = torch.sigmoid(beta * chosen_logratios)
        losses_rejected = 1 - torch.sigmoid(beta * delta_score)
        return losses_chosen + losses_rejected
    if loss_type == "discopop":
        logits = delta_score * beta
        log_ratio_modulation = torch.sigmoid(logits / discopop_tau)
        logistic_component = -F.logsigmoid(logits)
        exp_component = torch.exp(-logits)
        return (
            logistic_component * (1 - log_ratio_modulation) + exp_component * log_ratio_modulation
        )
    if loss_type == "sigmoid_norm":
        chosen_avg_score = chosen_scores / t["chosen_len"].clamp(min=1.0)
        rejected_avg_score = rejected_scores / t["rejected_len"].clamp(min=1.0)
        return -F.logsigmoid(beta * (chosen_avg_score - rejected_avg_score))
    if loss_type == "sft":
        # F.cross_entropy over the chosen completion tokens, expanded to every row.
        nll = -t["chosen_logps"].sum() / t["chosen_len"].sum()
        return nll.expand(t["chosen_logps"].shape[0])
    raise ValueError(loss_type)


def trl1x_tensors(inputs, f_divergence_type="reverse_kl", f_alpha_divergence_coef=1.0):
    """The names `_compute_loss` has in scope once the log-probs are in."""
    chosen_logratios = inputs["policy_chosen_logps"] - inputs["ref_chosen_logps"]
    rejected_logratios = inputs["policy_rejected_logps"] - inputs["ref_rejected_logps"]
    chosen_scores, rejected_scores = trl1x_scores(
        chosen_logratios, rejected_logratios, f_divergence_type, f_alpha_divergence_coef
    )
    return {
        "chosen_logps": inputs["policy_chosen_logps"],
        "rejected_logps": inputs["policy_rejected_logps"],
        "ref_chosen_logps": inputs["ref_chosen_logps"],
        "ref_rejected_logps": inputs["ref_rejected_logps"],
        "chosen_logratios": chosen_logratios,
        "rejected_logratios": rejected_logratios,
        "chosen_scores": chosen_scores,
        "rejected_scores": rejected_scores,
        "chosen_len": inputs["chosen_lengths"],
        "rejected_len": inputs["rejected_lengths"],
    }


def trl1x_loss(inputs, loss_types, loss_weights, beta, **kwargs):
    """The loop: `loss += per_sequence_loss.mean() * loss_weight` (weights default to 1.0)."""
    f_options = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("f_")}
    t = trl1x_tensors(inputs, **f_options)
    loss_weights = loss_weights or [1.0] * len(loss_types)
    loss = 0.0
    for loss_type, loss_weight in zip(loss_types, loss_weights, strict=True):
        loss += trl1x_per_sequence_loss(loss_type, t, beta, **kwargs).mean() * loss_weight
    return loss


def small_ratio_inputs(seed: int, size: int = B) -> dict[str, torch.Tensor]:
    """Sums as `make_batch`, references within ±3 nats of the policy (so e^(±r) stays moderate),
    plus one row whose log-ratios (±200) reach the alpha-divergence clamp."""
    inputs = as_inputs(make_batch(seed, size))
    generator = torch.Generator().manual_seed(seed)
    for side in ("chosen", "rejected"):
        shift = (torch.rand(size, generator=generator, dtype=torch.float64) - 0.5) * 6
        inputs[f"ref_{side}_logps"] = inputs[f"policy_{side}_logps"] - shift
    inputs["ref_chosen_logps"][0] = inputs["policy_chosen_logps"][0] - 200.0
    inputs["ref_rejected_logps"][0] = inputs["policy_rejected_logps"][0] + 200.0
    return inputs


#: Our name -> TRL 1.x's `loss_type`, for every loss whose TRL 1.x branch reads the scores.
F_DIVERGENCE_LOSSES = {
    "dpo": "sigmoid",
    "robust": "robust",
    "hinge": "hinge",
    "ipo": "ipo",
    "exo_pair": "exo_pair",
    "nca_pair": "nca_pair",
    "bco_pair": "bco_pair",
    "sppo_hard": "sppo_hard",
    "apo_down": "apo_down",
    "discopop": "discopop",
    "sigmoid_norm": "sigmoid_norm",
}
F_DIVERGENCES = [
    ("forward_kl", 1.0),
    ("js_divergence", 1.0),
    ("alpha_divergence", 0.5),
    ("alpha_divergence", 1.5),
    ("alpha_divergence", 1.0),
]
#: Smoothing where the loss needs or takes it (exo_pair needs ε > 0; TRL 1.x's sigmoid has none).
SMOOTHING = {"robust": 0.1, "exo_pair": 1e-3}


@pytest.mark.parametrize(("kind", "coef"), F_DIVERGENCES)
@pytest.mark.parametrize("name", F_DIVERGENCE_LOSSES)
def test_f_divergence_matches_trl_1x(name: str, kind: str, coef: float) -> None:
    inputs = small_ratio_inputs(30)
    if name == "bco_pair":
        inputs["delta"] = torch.tensor(0.0, dtype=torch.float64)  # TRL 1.x has no running mean
    hyper = dict(beta=0.5, f_divergence_type=kind, f_alpha_divergence_coef=coef)
    smoothing = SMOOTHING.get(name)
    if smoothing is not None:
        hyper["label_smoothing"] = smoothing
    got = call(name, inputs, **hyper)
    t = trl1x_tensors(inputs, kind, coef)
    expected = trl1x_per_sequence_loss(
        F_DIVERGENCE_LOSSES[name], t, 0.5, label_smoothing=smoothing or 0.0
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", F_DIVERGENCE_LOSSES)
def test_every_f_divergence_changes_the_loss_and_reverse_kl_is_plain(name: str) -> None:
    """reverse_kl (the default) is bit-for-bit the plain loss; the others are not."""
    inputs = small_ratio_inputs(31)
    if name == "bco_pair":
        inputs["delta"] = torch.tensor(0.0, dtype=torch.float64)
    plain = call(name, inputs, beta=0.5)
    assert torch.equal(call(name, inputs, beta=0.5, f_divergence_type="reverse_kl"), plain)
    for kind, coef in F_DIVERGENCES[:3]:
        changed = call(name, inputs, beta=0.5, f_divergence_type=kind, f_alpha_divergence_coef=coef)
        assert not torch.allclose(changed, plain), kind


def test_alpha_divergence_zero_is_forward_kl_and_trl_019_coefficient_is_one_minus_alpha() -> None:
    """TRL 0.19.1 `dpo_loss` wrote logits = (e^(−a·r_l) − e^(−a·r_w))/a: a = 1 − α in TRL 1.x."""
    inputs = small_ratio_inputs(32)
    forward = call("dpo", inputs, beta=0.5, f_divergence_type="forward_kl")
    alpha_zero = call(
        "dpo", inputs, beta=0.5, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.0
    )
    torch.testing.assert_close(alpha_zero, forward)
    r_w = inputs["policy_chosen_logps"] - inputs["ref_chosen_logps"]
    r_l = inputs["policy_rejected_logps"] - inputs["ref_rejected_logps"]
    a = 0.3
    logits_019 = (torch.exp(-a * r_l) - torch.exp(-a * r_w)) / a
    rows = slice(1, None)  # row 0 reaches the 1.x clamp, which 0.19.1's `cap_exp` places elsewhere
    got = call(
        "dpo", inputs, beta=0.5, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1 - a
    )
    torch.testing.assert_close(got[rows], -F.logsigmoid(0.5 * logits_019)[rows])


def test_unknown_f_divergence_is_an_input_error() -> None:
    with pytest.raises(InputError, match="f_divergence_type='kl'"):
        call("dpo", as_inputs(make_batch(33)), f_divergence_type="kl")


# LD-DPO: the tokens past a pair's shared length, weighted by ld_alpha.


def trl1x_ld_logps(per_token_logps, shift_completion_mask, ld_alpha):
    """`_compute_loss` / `compute_ref_log_probs` with `self.ld_alpha` set (batch = [chosen;
    rejected]); non-completion positions of `per_token_logps` are already 0, as TRL sets them."""
    comp_pos = shift_completion_mask.cumsum(dim=1)
    comp_lens = shift_completion_mask.sum(dim=1).long()
    chosen_lens, rejected_lens = comp_lens.chunk(2, dim=0)
    shared_lens = torch.minimum(chosen_lens, rejected_lens)
    shared_lens = torch.cat([shared_lens, shared_lens], dim=0)
    shared_mask = (comp_pos > 0) & (comp_pos <= shared_lens.unsqueeze(1))  # shared: 1 <= pos <= len
    tail_mask = comp_pos > shared_lens.unsqueeze(1)  # tail: pos > shared_len
    shared_logps = (per_token_logps * shared_mask).sum(dim=1)
    tail_logps = (per_token_logps * tail_mask).sum(dim=1)
    return shared_logps + ld_alpha * tail_logps


def _ld_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
    """Three pairs (rows 0-2 chosen, 3-5 rejected) with prompts of 2-3 tokens, completions of
    4/2, 1/5 and 3/3 tokens and right padding, and a scorer returning fixed token log-probs."""
    from evalharness.trainers.models import scored_mask

    width = 10
    prompts, completions = (2, 3, 2, 2, 3, 2), (4, 1, 3, 2, 5, 3)
    labels = torch.full((6, width), -100)
    input_ids = torch.ones((6, width), dtype=torch.long)
    attention_mask = torch.zeros((6, width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        labels[row, prompt : prompt + completion] = 7
        attention_mask[row, : prompt + completion] = 1
    values = -torch.rand(6, width, generator=torch.Generator().manual_seed(34), dtype=torch.float64)

    def scorer(ids, mask, scored_labels):
        return values * scored_mask(scored_labels), None

    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return batch, values * scored_mask(labels), scorer


@pytest.mark.parametrize("ld_alpha", [0.0, 0.3, 1.0])
def test_ld_alpha_sums_match_trl_1x(ld_alpha: float) -> None:
    from evalharness.trainers.inputs import pairwise_inputs
    from evalharness.trainers.models import scored_mask

    batch, token_logps, scorer = _ld_batch()
    plain = pairwise_inputs(scorer, batch, None)
    got = pairwise_inputs(scorer, batch, None, ld_alpha=ld_alpha)
    expected = trl1x_ld_logps(token_logps, scored_mask(batch["labels"]).long(), ld_alpha)
    torch.testing.assert_close(got["policy_chosen_logps"], expected[:3], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["policy_rejected_logps"], expected[3:], rtol=1e-12, atol=1e-12)
    # Lengths stay token counts; the NLL terms keep the unweighted chosen sums.
    torch.testing.assert_close(got["chosen_lengths"], plain["chosen_lengths"])
    torch.testing.assert_close(got["policy_chosen_nll_logps"], plain["policy_chosen_logps"])
    assert "policy_chosen_nll_logps" not in plain
    if ld_alpha == 1.0:
        torch.testing.assert_close(got["policy_chosen_logps"], plain["policy_chosen_logps"])
    else:  # pairs 0 and 1 have a verbose tail, pair 2 (equal lengths) has none
        assert not torch.allclose(got["policy_chosen_logps"][:2], plain["policy_chosen_logps"][:2])
        torch.testing.assert_close(got["policy_chosen_logps"][2], plain["policy_chosen_logps"][2])


def test_rpo_and_sft_terms_read_the_unweighted_sums_under_ld_alpha() -> None:
    """TRL's NLL is a cross-entropy over the logits: ld_alpha never reaches it."""
    inputs = as_inputs(make_batch(35))
    plain_sums = inputs["policy_chosen_logps"].clone()
    inputs["policy_chosen_nll_logps"] = plain_sums
    inputs["policy_chosen_logps"] = plain_sums * 0.7  # as if LD-weighted
    nll = trl_token_mean_nll(plain_sums.numpy(), inputs["chosen_lengths"].numpy())
    dpo_rows = call("dpo", inputs, rpo_alpha=0.0)
    got = call("dpo", inputs, rpo_alpha=1.0).mean()
    torch.testing.assert_close(got, dpo_rows.mean() + nll)
    inputs["delta"] = torch.tensor(0.0, dtype=torch.float64)
    got = call("mixture", inputs, loss_type=["sigmoid", "sft"]).mean()
    torch.testing.assert_close(got, dpo_rows.mean() + nll)


def _pair_file(path) -> str:
    import json

    rows = [
        {"prompt": f"say {word}", "chosen": " good water", "rejected": " bad cat dog runs"}
        for word in ("one", "two", "three", "four", "five", "six")
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_ld_alpha_weights_policy_and_reference_alike_in_the_loop(tiny_model_dir, tmp_path) -> None:
    """Before any step the policy is the reference, so with LD applied to both every log-ratio
    is 0 and DPO's loss is log 2; weighting only one side (TRL 0.19.1 did: `not is_ref_model`)
    would leave a non-zero ratio on every pair with a verbose tail."""
    from evalharness.trainers.batches import to_device
    from evalharness.trainers.config import TrainConfig
    from evalharness.trainers.loop import Trainer
    from evalharness.trainers.models import PolicyScorer

    def first_batch(loss_args: dict) -> dict[str, torch.Tensor]:
        trainer = Trainer(
            TrainConfig(
                method="dpo",
                model=f"hf:{tiny_model_dir}",
                data=_pair_file(tmp_path / "pairs.jsonl"),
                out=str(tmp_path / "out"),
                batch_size=6,
                loss_args=loss_args,
            ),
            progress=False,
        )
        batch = to_device(trainer.train_data.batch(list(range(6))), trainer.accelerator.device)
        with torch.no_grad():
            inputs = trainer.loss_inputs(PolicyScorer(trainer.model), batch, "train")
            loss = trainer.method.loss(
                **{k: inputs[k] for k in trainer.method.inputs if k in inputs}, **trainer.hyper
            )
        return {**inputs, "loss": loss}

    plain = first_batch({})
    weighted = first_batch({"ld_alpha": 0.25})
    for side in ("chosen", "rejected"):
        torch.testing.assert_close(
            weighted[f"ref_{side}_logps"], weighted[f"policy_{side}_logps"], rtol=1e-5, atol=1e-5
        )
    # The rejected answers are the longer ones: only their sums carry a down-weighted tail.
    assert torch.all(weighted["policy_rejected_logps"] > plain["policy_rejected_logps"] + 1e-3)
    torch.testing.assert_close(weighted["policy_chosen_logps"], plain["policy_chosen_logps"])
    torch.testing.assert_close(weighted["policy_chosen_nll_logps"], plain["policy_chosen_logps"])
    torch.testing.assert_close(
        weighted["loss"], torch.full_like(weighted["loss"], math.log(2.0)), rtol=1e-4, atol=1e-4
    )


def test_ld_alpha_is_an_option_of_reference_methods_only() -> None:
    from evalharness.trainers.losses import hyperparameters

    assert hyperparameters(losses.method("ipo"), {"ld_alpha": "0.5"})["ld_alpha"] == 0.5
    with pytest.raises(InputError, match="no hyperparameter ld_alpha"):
        hyperparameters(losses.method("cpo"), {"ld_alpha": 0.5})


# Mixtures: TRL's `loss_type` list with `loss_weights`.

MPO = dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])


@pytest.mark.parametrize(
    ("hyper", "kwargs"),
    [
        (MPO, {}),
        (
            dict(loss_type="sigmoid,hinge,ipo,sft", loss_weights="1,0.5,0.25,2"),
            dict(f_divergence_type="js_divergence"),
        ),
        (
            dict(loss_type=["robust", "exo_pair", "discopop", "apo_zero", "aot"]),
            dict(
                label_smoothing=0.1,
                f_divergence_type="alpha_divergence",
                f_alpha_divergence_coef=0.5,
            ),
        ),
    ],
)
def test_mixture_matches_trl_1x_loss_loop(hyper: dict, kwargs: dict) -> None:
    inputs = small_ratio_inputs(36)
    inputs["delta"] = torch.tensor(0.0, dtype=torch.float64)  # TRL 1.x's bco_pair: no δ
    got = call("mixture", inputs, beta=0.5, **hyper, **kwargs)
    names = hyper["loss_type"]
    names = names.split(",") if isinstance(names, str) else names
    weights = hyper.get("loss_weights")
    weights = [float(w) for w in weights.split(",")] if isinstance(weights, str) else weights
    expected = trl1x_loss(inputs, names, weights, 0.5, **kwargs)
    torch.testing.assert_close(got.mean(), expected, rtol=1e-6, atol=1e-6)


def test_mixture_parts_are_the_methods_and_bco_pair_reads_delta() -> None:
    inputs = as_inputs(make_batch(37))
    inputs["delta"] = torch.tensor(0.4, dtype=torch.float64)
    torch.testing.assert_close(call("mixture", inputs), call("dpo", inputs))
    torch.testing.assert_close(
        call("mixture", inputs, loss_type="bco_pair", loss_weights=[2.0]),
        2.0 * call("bco_pair", inputs),
    )


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        (dict(loss_type="sigmoid,nope"), "'nope' is not one of"),
        (dict(loss_type="dpo"), "`dpo` is `sigmoid`"),
        (dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0]), "1 value"),
        (dict(loss_type="sigmoid", loss_weights="x"), "'x' is not a number"),
        (dict(loss_type="exo_pair"), "label_smoothing=0.0"),
    ],
)
def test_bad_mixtures_are_input_errors(hyper: dict, message: str) -> None:
    inputs = as_inputs(make_batch(38))
    inputs["delta"] = torch.tensor(0.0, dtype=torch.float64)
    with pytest.raises(InputError, match=message):
        call("mixture", inputs, **hyper)


# AlphaPO: TRL CPOTrainer's `alpha` reshapes CPO's and SimPO's rewards.


def trl_cpo_loss_alphapo(chosen, rejected, beta, label_smoothing, loss_type, simpo_gamma, alpha):
    """`CPOTrainer.cpo_loss` with `self.alpha` (the `sigmoid` and `simpo` branches)."""
    if alpha != 0.0:
        chosen_probs = torch.exp(chosen)
        rejected_probs = torch.exp(rejected)
        policy_chosen_rewards = (1 - chosen_probs.pow(-alpha)) / alpha
        policy_rejected_rewards = (1 - rejected_probs.pow(-alpha)) / alpha
        logits = policy_chosen_rewards - policy_rejected_rewards
    else:
        logits = chosen - rejected
    if loss_type == "simpo":
        logits = logits - simpo_gamma / beta
    return (
        -F.logsigmoid(beta * logits) * (1 - label_smoothing)
        - F.logsigmoid(-beta * logits) * label_smoothing
    )


@pytest.mark.parametrize("alpha", [0.05, -0.02])
def test_cpo_alphapo_matches_trl(alpha: float) -> None:
    inputs = as_inputs(make_batch(39))
    chosen, rejected = inputs["policy_chosen_logps"], inputs["policy_rejected_logps"]
    expected = trl_cpo_loss_alphapo(chosen, rejected, 0.1, 0.1, "sigmoid", 0.5, alpha)
    got = call("cpo", inputs, beta=0.1, label_smoothing=0.1, cpo_alpha=0.0, alpha=alpha)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    nll = trl_token_mean_nll(chosen.numpy(), inputs["chosen_lengths"].numpy())
    got = call("cpo", inputs, beta=0.1, label_smoothing=0.1, alpha=alpha).mean()  # cpo_alpha 1
    torch.testing.assert_close(got, expected.mean() + nll, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.25, 1.0])
def test_simpo_alphapo_matches_trl(alpha: float) -> None:
    """SimPO's rewards are of mean token log-probs (`average_log_prob=True` for `simpo`)."""
    inputs = as_inputs(make_batch(40))
    chosen = inputs["policy_chosen_logps"] / inputs["chosen_lengths"]
    rejected = inputs["policy_rejected_logps"] / inputs["rejected_lengths"]
    expected = trl_cpo_loss_alphapo(chosen, rejected, 2.0, 0.0, "simpo", 1.0, alpha)
    got = call("simpo", inputs, beta=2.0, gamma=1.0, alpha=alpha)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, call("simpo", inputs, beta=2.0, gamma=1.0))


def test_alphapo_stays_finite_where_trls_probability_underflows() -> None:
    """p^(−α) with p = e^lp underflowing to 0 is ∞ in TRL's form; e^(−α·lp) is the same number."""
    inputs = as_inputs(make_batch(41, 3))
    inputs["policy_chosen_logps"] = torch.tensor([-800.0, -30.0, -40.0], dtype=torch.float64)
    assert not torch.isfinite(torch.exp(inputs["policy_chosen_logps"]).pow(-0.1)).all()
    assert torch.isfinite(call("cpo", inputs, alpha=0.1)).all()


# Config, command line and `evalharness methods`.

MIXTURE_YAML = """\
method: mixture
model: hf:base
data: prefs.jsonl
out: runs/mpo
loss_args:
  loss_type: [sigmoid, bco_pair, sft]
  loss_weights: [0.8, 0.2, 1.0]
  f_divergence_type: js_divergence
  ld_alpha: 0.5
"""


def test_yaml_loss_type_list_round_trips_through_the_config() -> None:
    import yaml

    from evalharness.trainers.config import TrainConfig
    from evalharness.trainers.losses import hyperparameters

    config = TrainConfig.from_mapping(yaml.safe_load(MIXTURE_YAML), "train.yaml")
    assert config.loss_args["loss_type"] == ["sigmoid", "bco_pair", "sft"]
    again = TrainConfig.from_mapping(yaml.safe_load(yaml.safe_dump(config.to_dict())), "again")
    assert again == config
    values = hyperparameters(losses.method("mixture"), again.loss_args)
    assert values["loss_type"] == ["sigmoid", "bco_pair", "sft"]
    assert values["loss_weights"] == [0.8, 0.2, 1.0]
    assert values["f_divergence_type"] == "js_divergence" and values["ld_alpha"] == 0.5
    # The command line's `--loss-arg loss_type=a,b,c` reads the same.
    cli = hyperparameters(
        losses.method("mixture"),
        {"loss_type": "sigmoid,bco_pair,sft", "loss_weights": "0.8,0.2,1.0"},
    )
    assert cli["loss_type"] == values["loss_type"] and cli["loss_weights"] == values["loss_weights"]


def test_a_bad_mixture_fails_on_the_command_line_before_any_load(capsys, tmp_path) -> None:
    from cli_helpers import run_cli

    code, _, err = run_cli(
        capsys, "train", "--method", "mixture", "--model", "hf:/nonexistent",
        "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"),
        "--loss-arg", "loss_type=sigmoid,nope", "--quiet",
    )  # fmt: skip
    assert code == 2
    assert "loss_type 'nope' is not one of" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        capsys, "train", "--method", "dpo", "--model", "hf:/nonexistent",
        "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"),
        "--loss-arg", "f_divergence_type=kl", "--quiet",
    )  # fmt: skip
    assert code == 2 and "f_divergence_type='kl'" in err


NEW_OPTIONS = {
    "f_divergence_type": "default reverse_kl",
    "f_alpha_divergence_coef": "default 1.0",
    "ld_alpha": "default null",
    "loss_type": "default sigmoid",
    "loss_weights": "default []",
    "alpha": "cpo: 0.0, simpo: 0.0, xpo: 1e-05",
    "cpo_alpha": "cpo: 1.0, simpo: 0.0",
}


def test_methods_command_documents_every_new_option(capsys) -> None:
    import json

    from cli_helpers import run_cli

    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    lines = out.splitlines()
    for name, default in NEW_OPTIONS.items():
        line = next((x for x in lines if x.strip().startswith(f"{name} (")), None)
        assert line is not None, name
        assert f"{name} ({default}): " in line and len(line.split("): ", 1)[1]) > 20, line
    assert "mixture" in out
    code, out, _ = run_cli(capsys, "methods", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["dpo"]["hyperparameters"]["ld_alpha"] is None
    assert rows["dpo"]["options"]["f_divergence_type"].startswith("DPO family")
    assert rows["mixture"]["hyperparameters"]["loss_type"] == "sigmoid"
    # gamma is shared by name with ppo's GAE discount: its meaning says what it is for each.
    assert set(rows["simpo"]["options"]) == {"alpha", "cpo_alpha", "gamma"}
    assert "simpo: the target margin" in rows["simpo"]["options"]["gamma"]
