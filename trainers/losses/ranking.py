"""Ranking losses over K scored candidates per prompt: RRHF, PRO and AFT's constraint alignment.

Inputs are `[B, K]`: summed completion log-probs, completion lengths and rewards; candidates
come in any order (each method orders them by reward itself). All three score a candidate by its
length-normalised log-prob `lp / |y|` and add a likelihood term on the best candidate, without
which ranking losses can be satisfied by lowering every likelihood at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from evalharness.errors import InputError

from . import scoring
from .family import REQUIRED, member
from .registry import register


def mean_logps(policy_logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Length-normalised scores `lp / |y|` `[B, K]` (an empty completion counts as length 1)."""
    if policy_logps.dim() != 2 or policy_logps.shape[-1] < 2:
        raise InputError(
            f"ranking losses need [batch, K >= 2] candidates, got shape {tuple(policy_logps.shape)}"
        )
    return scoring.mean_logps(policy_logps, lengths)


def ranking_loss(
    name: str, *, summary: str
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register `score(scores, rewards, /, *, <options>)` as the ranking loss `name`.

    The registered loss takes `policy_logps`, `lengths` and `rewards` `[B, K]` (`family.member`)
    and hands `score` each candidate's length-normalised score `lp / |y|` (`mean_logps`, which
    checks the shape) with the rewards; a loss that also needs the summed log-probs names
    `policy_logps` among its keywords.
    """

    def prepare(arguments: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_logps(arguments["policy_logps"], arguments["lengths"]), arguments["rewards"]

    def wrap(score: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        inputs = dict.fromkeys(("policy_logps", "lengths", "rewards"), REQUIRED)
        loss = member(score, inputs=inputs, prepare=prepare)
        return register(name, data="ranking", reference=False, summary=summary)(loss)

    return wrap


def best_index(rewards: torch.Tensor) -> torch.Tensor:
    """Column `[B, 1]` of the highest-reward candidate (the first one on ties)."""
    return rewards.argmax(dim=-1, keepdim=True)


def log1p_sum_exp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`log(1 + sum exp(values))` over the last dim where `mask` holds; 0 for an empty mask.

    Written as a logsumexp with a zero column so large score gaps cannot overflow.
    """
    masked = values.masked_fill(~mask, float("-inf"))
    zeros = torch.zeros_like(values[..., :1])
    return torch.logsumexp(torch.cat([zeros, masked], dim=-1), dim=-1)


@ranking_loss(
    "rrhf",
    summary="RRHF: hinge on length-normalised log-probs ordered by reward, plus NLL of the best",
)
def rrhf(
    scores: torch.Tensor,
    rewards: torch.Tensor,
    /,
    *,
    rank_weight: float = 1.0,
    nll_weight: float = 1.0,
) -> torch.Tensor:
    """RRHF (Yuan et al. 2023): `sum_{R_i < R_j} max(0, p_i - p_j)` + NLL of the best candidate.

    Follows `RRHFTrainer` in GanjinZero/RRHF `train.py`: `rrhf_loss` sums `p_i - p_j` over pairs
    where candidate j has the higher reward but the lower score p = lp / |y| (`length_penalty`
    1); `sft_loss` is `-logit_label[argmax reward].mean()`, a per-token mean, so the NLL here is
    `-lp_best / |y_best|`. (The reference averages over the padded sequence, prompt positions
    zeroed; dividing by the completion length is the same quantity without the padding
    artefact.) `rank_weight`: the paper's objective is L_rank + L_ft (weight 1) and the
    released `train.sh` scripts pass `--rrhf_weight 1`; the code's argument default is 100.
    """
    worse = rewards.unsqueeze(-1) < rewards.unsqueeze(-2)  # [b, i, j]: R_i < R_j
    excess = (scores.unsqueeze(-1) - scores.unsqueeze(-2)).clamp(min=0)  # max(0, p_i - p_j)
    rank = (excess * worse).sum(dim=(-2, -1))
    nll = -scores.gather(-1, best_index(rewards)).squeeze(-1)
    return rank_weight * rank + nll_weight * nll


def sort_by_reward(rewards: torch.Tensor, *columns: torch.Tensor) -> list[torch.Tensor]:
    """`rewards` and each column sorted by descending reward per row (stable on ties)."""
    order = torch.argsort(rewards, dim=-1, descending=True, stable=True)
    return [tensor.gather(-1, order) for tensor in (rewards, *columns)]


def pro_ranking_terms(scores: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """PRO's Plackett–Luce terms summed over positions `[B]`; inputs sorted best first.

    Position k: `log(exp(s_k T_k) + sum_{i>k} exp(s_i T_ki)) - s_k T_k` with the reward gaps
    `T_ki = R_k - R_i` as inverse temperatures and `T_k = max_i T_ki`: a candidate far worse
    than y_k is pushed down harder. PRO's code adds 1e-10 inside the log; the logsumexp here
    is stable without it (the difference is below 1e-9 for rewards of order 1).
    """
    total = torch.zeros_like(scores[:, 0])
    for k in range(scores.shape[-1] - 1):
        gaps = rewards[:, k : k + 1] - rewards[:, k + 1 :]
        top_gap = gaps.max(dim=-1).values
        head = scores[:, k] * top_gap
        logits = torch.cat([head.unsqueeze(-1), scores[:, k + 1 :] * gaps], dim=-1)
        total = total + torch.logsumexp(logits, dim=-1) - head
    return total


@ranking_loss(
    "pro",
    summary="PRO: Plackett-Luce over length-normalised log-probs with reward-gap temperatures",
)
def pro(
    scores: torch.Tensor,
    rewards: torch.Tensor,
    /,
    *,
    policy_logps: torch.Tensor,
    sft_weight: float = 0.05,
) -> torch.Tensor:
    """PRO (Song et al. 2023) as `compute_loss` in AlibabaResearch/DAMO-ConvAI `PRO/train/utils/
    process_manager.py`: the ranking terms plus `sft_weight * (n - 1)**2 * NLL(best)`.

    PRO's NLL is the *summed* log-prob of the SFT target (`-sum_scores[sft_index]`), not the
    per-token mean its ranking scores use; that is kept. PRO's data names the SFT target
    (`sft_index`); here it is the highest-reward candidate. `sft_weight` 0.05 is what the
    released `train_hh.sh` passes (the argparse default is 2). Each position's term is a batch
    mean in PRO; summing per row first and averaging gives the same batch loss.
    """
    rewards, scores, policy_logps = sort_by_reward(rewards, scores, policy_logps)
    ranking = pro_ranking_terms(scores, rewards)
    candidates = scores.shape[-1]
    return ranking + sft_weight * (candidates - 1) ** 2 * -policy_logps[:, 0]


def aft_positive_mask(rewards: torch.Tensor) -> torch.Tensor:
    """Positives `[B, K]`: candidates whose reward is above their row's mean reward.

    AFT splits sampled chains of thought into correct (positive) and incorrect (negative). For
    0/1 rewards, "above the row mean" is exactly "correct" whenever both kinds occur. For graded
    rewards it keeps every clearly-good candidate positive, where "best versus rest" would push
    a near-best candidate down, the over-penalisation AFT's constraint exists to prevent. A row
    with equal rewards has no positives and contributes only its NLL.
    """
    return rewards > rewards.mean(dim=-1, keepdim=True)


def aft_alignment(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """`log(1 + sum_{p in pos} sum_{n in neg} exp(s_n - s_p))` per row `[B]`."""
    pairs = positive.unsqueeze(-1) & ~positive.unsqueeze(-2)  # [b, p, n]
    gaps = scores.unsqueeze(-2) - scores.unsqueeze(-1)  # [b, p, n] = s_n - s_p
    return log1p_sum_exp(gaps.flatten(-2), pairs.flatten(-2))


def aft_boundary(scores: torch.Tensor, positive: torch.Tensor, boundary: float) -> torch.Tensor:
    """`log(1 + sum_{n in neg} exp(B - s_n))` per row with `B = sg(min_pos s) - boundary`.

    A soft floor under the negatives: the alignment term's push on a negative fades only as
    exp(s_n - s_p), so alone it keeps lowering negatives; this term pushes back with a force
    that grows as exp(B - s_n) once a negative sinks below B, `boundary` nats per token under
    the weakest positive. B is detached so the floor never pulls the positives down.
    """
    has_positive = positive.any(dim=-1, keepdim=True)
    weakest = scores.detach().masked_fill(~positive, float("inf")).min(dim=-1, keepdim=True).values
    floor = torch.where(has_positive, weakest - boundary, torch.zeros_like(weakest))
    return log1p_sum_exp(floor - scores, ~positive & has_positive)


@ranking_loss(
    "aft",
    summary="AFT constraint alignment: positives above negatives, negatives kept above a floor",
)
def aft(
    scores: torch.Tensor,
    rewards: torch.Tensor,
    /,
    *,
    boundary: float = 0.5,
    nll_weight: float = 1.0,
) -> torch.Tensor:
    """AFT constraint alignment (Wang et al. 2023, arXiv 2309.02144) with the boundary form.

    Alignment term `log(1 + sum_p sum_n exp(s_n - s_p))` on s = lp / |y| over the positive /
    negative split of `aft_positive_mask`, plus the boundary term of `aft_boundary`, plus
    `nll_weight` times the per-token NLL of the best candidate (AFT trains the constraint loss
    together with the fine-tuning NLL; with no gold answer in ranking data, the best sample
    stands in for it). The paper's exact boundary formula and code could not be retrieved
    (no public code found); this implements METHODS.md's description. The paper's alternative
    "detached" constraint and its ranking extension are not implemented; `boundary` 0.5 is our
    default, not the paper's.
    """
    positive = aft_positive_mask(rewards)
    constraint = aft_alignment(scores, positive) + aft_boundary(scores, positive, boundary)
    nll = -scores.gather(-1, best_index(rewards)).squeeze(-1)
    return constraint + nll_weight * nll
