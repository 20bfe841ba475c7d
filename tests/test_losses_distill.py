"""GKD's generalised JSD against an independent numpy transcription of TRL's code.

`trl_generalized_jsd_loss` and `trl_compute_loss` below are transcribed by hand, in float64
numpy, from TRL v1.9.0 (tag v1.9.0, the release that has `GKDTrainer` under
trl/experimental/gkd/), none of it calling the code under test:

- trl/experimental/gkd/gkd_trainer.py `GKDTrainer.generalized_jsd_loss` (l. 238-323):
  temperature scaling, log-softmax, `F.kl_div(..., reduction="none", log_target=True)` (here
  exp(target)·(target − input)), the β = 0 and β = 1 ends as their own branches, the mixture
  by logsumexp with log1p(−β) and log β, masking with `labels != -100`, and the reductions
  (`batchmean` = sum / max(#unmasked, 1), or / batch size without labels; `sum`; `mean`).
- the same file's `compute_loss` (l. 398-428, the non-Liger path): logits[:, :-1] against
  labels[:, 1:], with `beta=self.beta` and no temperature (so 1.0).
- trl/experimental/gkd/gkd_config.py `GKDConfig` (l. 55-102): the defaults temperature 0.9,
  lmbda 0.5, beta 0.5, seq_kd False, and (l. 104-110) lmbda and beta in [0, 1].

Running TRL's own `generalized_jsd_loss` (its source from that tag, executed on the inputs
below) agreed with the code under test to 7e-15 for every case of `test_matches_trl`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from evalharness.errors import InputError
from evalharness.trainers import losses
from evalharness.trainers.losses.distill import generalized_jsd_loss

B, T, V = 3, 7, 11


# --- TRL v1.9.0, transcribed (float64 numpy) ----------------------------------------------------


def log_softmax(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return x - (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))


def kl_div_log_target(input_: np.ndarray, target: np.ndarray) -> np.ndarray:
    """torch.nn.functional.kl_div(input, target, reduction="none", log_target=True)."""
    return np.exp(target) * (target - input_)


def trl_generalized_jsd_loss(
    student_logits: np.ndarray,
    teacher_logits: np.ndarray,
    labels: np.ndarray | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
) -> float:
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature
    student_log_probs = log_softmax(student_logits)
    teacher_log_probs = log_softmax(teacher_logits)
    if beta == 0:
        jsd = kl_div_log_target(student_log_probs, teacher_log_probs)
    elif beta == 1:
        jsd = kl_div_log_target(teacher_log_probs, student_log_probs)
    else:
        mixture_log_probs = np.logaddexp(
            student_log_probs + np.log1p(-beta), teacher_log_probs + np.log(beta)
        )
        kl_teacher = kl_div_log_target(mixture_log_probs, teacher_log_probs)
        kl_student = kl_div_log_target(mixture_log_probs, student_log_probs)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    if labels is not None:
        mask = labels != -100
        jsd = jsd[mask]
    if reduction == "batchmean":
        denom = max(mask.sum(), 1) if labels is not None else max(jsd.shape[0], 1)
        return float(jsd.sum() / denom)
    if reduction == "sum":
        return float(jsd.sum())
    assert reduction == "mean"
    return float(jsd.mean())


def trl_compute_loss(
    student_logits: np.ndarray, teacher_logits: np.ndarray, labels: np.ndarray, beta: float
) -> float:
    return trl_generalized_jsd_loss(
        student_logits[:, :-1, :], teacher_logits[:, :-1, :], labels[:, 1:], beta=beta
    )


# --- fixed inputs ---------------------------------------------------------------------------------


def fixed_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student and teacher logits `[B, T, V]` of different scales, and labels padded with -100:
    a prompt prefix, right padding, and a row with a single scored position."""
    generator = np.random.default_rng(seed)
    student = generator.normal(size=(B, T, V)) * 2.0
    teacher = generator.normal(size=(B, T, V)) * 3.0 + 0.5
    labels = generator.integers(0, V, size=(B, T))
    labels[0, :2] = -100
    labels[1, 5:] = -100
    labels[2, :] = -100
    labels[2, 4] = 3
    return student, teacher, labels


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
@pytest.mark.parametrize("beta", BETAS)
def test_matches_trl(beta: float, temperature: float, reduction: str, with_labels: bool) -> None:
    student, teacher, labels = fixed_inputs()
    given = labels if with_labels else None
    expected = trl_generalized_jsd_loss(student, teacher, given, beta, temperature, reduction)
    got = generalized_jsd_loss(
        as_tensor(student),
        as_tensor(teacher),
        None if given is None else as_tensor(given),
        beta=beta,
        temperature=temperature,
        reduction=reduction,
        chunk_tokens=4,  # several blocks of the 21 positions, the last one short
    )
    assert float(got) == pytest.approx(expected, abs=1e-6, rel=0)
    assert expected > 0


@pytest.mark.parametrize("beta", BETAS)
def test_float32_logits_match_trl_to_single_precision(beta: float) -> None:
    """The loop gives float32 logits; the divergence keeps their dtype, as TRL's does."""
    student, teacher, labels = fixed_inputs(seed=1)
    got = generalized_jsd_loss(
        as_tensor(student).float(), as_tensor(teacher).float(), as_tensor(labels), beta=beta
    )
    assert got.dtype == torch.float32
    expected = trl_generalized_jsd_loss(student, teacher, labels, beta)
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("chunk_tokens", [1, 4, None])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gradient_matches_finite_differences_of_trl(beta: float, chunk_tokens: int | None) -> None:
    """Chunked with recomputation in the backward pass, the gradient is still TRL's: checked
    against central differences of the transcription at every logit, masked ones included
    (whose gradient must be exactly 0)."""
    student, teacher, labels = fixed_inputs(seed=2)
    logits = as_tensor(student).clone().requires_grad_(True)
    loss = generalized_jsd_loss(
        logits, as_tensor(teacher), as_tensor(labels), beta=beta, chunk_tokens=chunk_tokens
    )
    loss.backward()
    step = 1e-6
    numeric = np.zeros_like(student)
    for index in np.ndindex(student.shape):
        up, down = student.copy(), student.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (
            trl_generalized_jsd_loss(up, teacher, labels, beta)
            - trl_generalized_jsd_loss(down, teacher, labels, beta)
        ) / (2 * step)
    assert np.abs(logits.grad.numpy() - numeric).max() < 1e-6
    assert torch.all(logits.grad[as_tensor(labels) == -100] == 0)


class FullSizeStorages(TorchDispatchMode):
    """Records every distinct storage of at least `nbytes` that an operation returns."""

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        self.nbytes, self.seen = nbytes, set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.untyped_storage().nbytes() >= self.nbytes:
                self.seen.add(value.untyped_storage().data_ptr())
        return out


@pytest.mark.parametrize("chunk_tokens", [1, 2, 5])
def test_backward_builds_one_full_size_gradient_whatever_the_chunks(chunk_tokens: int) -> None:
    """Chunking bounds the backward pass too: the logits' gradient is the only `[B, T, V]`
    tensor it builds, not one zero-filled full-size gradient per chunk."""
    student, teacher, labels = fixed_inputs(seed=4)
    logits = as_tensor(student).clone().requires_grad_(True)
    loss = generalized_jsd_loss(
        logits, as_tensor(teacher), as_tensor(labels), chunk_tokens=chunk_tokens
    )
    probe = FullSizeStorages(logits.untyped_storage().nbytes())
    with probe:
        loss.backward()
    assert len(probe.seen) == 1


def test_teacher_logits_get_no_gradient() -> None:
    student, teacher, labels = fixed_inputs()
    teacher_logits = as_tensor(teacher).clone().requires_grad_(True)
    student_logits = as_tensor(student).clone().requires_grad_(True)
    generalized_jsd_loss(student_logits, teacher_logits, as_tensor(labels)).backward()
    assert teacher_logits.grad is None and student_logits.grad is not None


# --- the registered method ------------------------------------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
def test_method_rows_average_to_trl_compute_loss(beta: float) -> None:
    """The loop shifts logits and labels as TRL's `compute_loss` does and hands `gkd` the
    completion mask; the mean of its rows is TRL's loss, a row's share its token count's."""
    student, teacher, labels = fixed_inputs(seed=3)
    mask = as_tensor(labels[:, 1:] != -100)
    rows = losses.get("gkd")(
        student_logits=as_tensor(student[:, :-1]),
        teacher_logits=as_tensor(teacher[:, :-1]),
        token_mask=mask,
        beta=beta,
    )
    assert rows.shape == (B,)
    assert float(rows.mean()) == pytest.approx(
        trl_compute_loss(student, teacher, labels, beta), abs=1e-6, rel=0
    )
    one_row = trl_generalized_jsd_loss(
        student[:1, :-1], teacher[:1, :-1], labels[:1, 1:], beta, reduction="sum"
    )
    assert float(rows[0]) == pytest.approx(one_row * B / int(mask.sum()), abs=1e-6, rel=0)


def test_an_empty_batch_is_zero_not_nan() -> None:
    """TRL clamps the token count at 1 (a completion truncated away); so does the method."""
    student, teacher, labels = fixed_inputs()
    labels[:] = -100
    assert (
        float(generalized_jsd_loss(as_tensor(student), as_tensor(teacher), as_tensor(labels))) == 0
    )
    rows = losses.get("gkd")(
        student_logits=as_tensor(student),
        teacher_logits=as_tensor(teacher),
        token_mask=torch.zeros(B, T, dtype=torch.bool),
    )
    assert torch.equal(rows, torch.zeros(B, dtype=rows.dtype))


def test_registered_with_gkdconfig_options_and_defaults() -> None:
    method = losses.method("gkd")
    assert method.data_format == "sft" and method.needs_reference is False
    assert method.required_inputs == ["student_logits", "teacher_logits", "token_mask"]
    assert method.hyperparameters == {
        "lmbda": 0.5,
        "beta": 0.5,
        "temperature": 0.9,
        "seq_kd": False,
        "teacher": None,
    }
    given = {"lmbda": "0.25", "seq_kd": "true", "teacher": "hf:/models/teacher", "beta": "0"}
    assert losses.hyperparameters(method, given) == {
        "lmbda": 0.25,
        "beta": 0.0,
        "temperature": 0.9,
        "seq_kd": True,
        "teacher": "hf:/models/teacher",
    }


def test_methods_command_shows_gkd_and_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import run_cli

    code, out, _ = run_cli(capsys, "methods", "--json")
    assert code == 0
    row = {row["name"]: row for row in json.loads(out)}["gkd"]
    assert row["data"] == "sft" and row["reference"] is False
    assert set(row["hyperparameters"]) == {"lmbda", "beta", "temperature", "seq_kd", "teacher"}
    assert set(row["options"]) >= {"lmbda", "seq_kd", "teacher"}
    code, out, _ = run_cli(capsys, "methods")
    assert any(line.strip().startswith("lmbda (default 0.5): gkd:") for line in out.splitlines())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"lmbda": "1.5"}, "lmbda=1.5 must lie in \\[0, 1\\]"),
        ({"teacher": ""}, "teacher='' must be a model spec"),
        ({"lmbda": "often"}, "lmbda='often' is not a number"),
    ],
)
def test_bad_options_are_one_line_errors(given: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        losses.hyperparameters(losses.method("gkd"), given)


def test_bad_loss_arguments_are_one_line_errors() -> None:
    student, teacher, labels = fixed_inputs()
    s, t = as_tensor(student), as_tensor(teacher)
    with pytest.raises(InputError, match="beta=1.5 must lie in \\[0, 1\\]"):
        generalized_jsd_loss(s, t, beta=1.5)
    with pytest.raises(InputError, match="temperature=0"):
        generalized_jsd_loss(s, t, temperature=0.0)
    with pytest.raises(InputError, match="reduction 'none'"):
        generalized_jsd_loss(s, t, reduction="none")
    with pytest.raises(InputError, match="another vocabulary"):
        generalized_jsd_loss(s, t[..., :-1])
