"""Training metrics: what each step logs, the JSONL log, and BCO's running reward mean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


class RunningMean:
    """Count-weighted mean of every value seen (TRL's `RunningMoments.mean`, used as BCO's δ)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def update(self, values: torch.Tensor) -> None:
        self.add(float(values.detach().float().sum()), values.numel())

    def add(self, total: float, count: int) -> None:
        """Fold in `count` values that sum to `total` (e.g. gathered from every process)."""
        self.total += total
        self.count += count


def preference_metrics(inputs: dict[str, torch.Tensor], beta: float) -> dict[str, float]:
    """Implicit rewards β·(lp − lp_ref), their margin and how often chosen beats rejected."""
    if "policy_chosen_logps" not in inputs:
        return {}
    chosen = inputs["policy_chosen_logps"].detach()
    rejected = inputs["policy_rejected_logps"].detach()
    if "ref_chosen_logps" in inputs:
        chosen = chosen - inputs["ref_chosen_logps"]
        rejected = rejected - inputs["ref_rejected_logps"]
    chosen, rejected = beta * chosen, beta * rejected
    return {
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
        "rewards/margin": float((chosen - rejected).mean()),
        "rewards/accuracy": float((chosen > rejected).float().mean()),
    }


def token_metrics(inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean NLL per completion token, and the mean per-token KL when it was computed."""
    out: dict[str, float] = {}
    if "token_logps" in inputs:
        mask = inputs["token_mask"]
        out["nll"] = float(-(inputs["token_logps"].detach() * mask).sum() / mask.sum().clamp(min=1))
        if "token_kl" in inputs:
            kl = inputs["token_kl"].detach()
            out["kl"] = float((kl * mask).sum() / mask.sum().clamp(min=1))
    if "policy_logps" in inputs and "ref_logps" in inputs:
        out["logratio"] = float((inputs["policy_logps"] - inputs["ref_logps"]).detach().mean())
    return out


class MetricsLog:
    """One JSON object per logged step in `OUT/metrics.jsonl` (appended, so resumes keep it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
