"""From a collated batch to the keyword tensors a loss asks for (see `losses.INPUTS`).

One function per data format; each runs the policy once over all of the batch's rows (chosen
and rejected together, all K candidates together) and slices the per-row sums.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .data.examples import IGNORE_INDEX
from .models import scored_mask

#: Reference quantities looked up per example index (precomputed once, cached on disk).
ReferenceLookup = Callable[[str, torch.Tensor], torch.Tensor]


def row_sums(token_logps: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of completion-token log-probs and the number of those tokens."""
    mask = scored_mask(labels)
    return (token_logps * mask).sum(-1), mask.sum(-1).to(token_logps.dtype)


def ld_weighted_sums(
    token_logps: torch.Tensor, mask: torch.Tensor, ld_alpha: float
) -> torch.Tensor:
    """LD-DPO's per-sequence log-probs: shared part + ld_alpha x verbose part, `[2B]`.

    Rows are B chosen then B rejected. A pair's shared length is min(|y_w|, |y_l|) completion
    tokens; each row's first that many completion tokens count fully, the rest ("verbose",
    only the longer answer has any) are weighted by ld_alpha, so a long answer cannot win on
    length alone (Liu et al. 2024, arXiv 2409.06411). Transcribed from TRL 1.x
    `DPOTrainer._compute_loss` / `compute_ref_log_probs` (huggingface/trl 2026 source): the
    completion position is `mask.cumsum`, shared = position <= min length, verbose = beyond.
    """
    position = mask.cumsum(dim=-1)
    lengths = mask.sum(dim=-1)
    half = lengths.shape[0] // 2
    shared_length = torch.minimum(lengths[:half], lengths[half:]).repeat(2).unsqueeze(-1)
    shared = mask & (position <= shared_length)
    verbose = mask & (position > shared_length)
    return (token_logps * shared).sum(-1) + ld_alpha * (token_logps * verbose).sum(-1)


def pairwise_inputs(
    scorer: Any,
    batch: dict[str, torch.Tensor],
    reference: ReferenceLookup | None,
    *,
    full_chosen: bool = False,
    ld_alpha: float | None = None,
) -> dict[str, torch.Tensor]:
    """Completion sums and lengths of chosen and rejected rows (+ reference sums).

    `full_chosen` also scores every attended token after the first, prompt included, and adds
    the chosen rows' sums and counts (`policy_chosen_full_logps`, `chosen_full_lengths`): ORPO's
    NLL as TRL computes it. It is the same forward with more labelled positions; the completion
    sums are read off it with the original labels' mask, so they are unchanged.

    `ld_alpha` (LD-DPO) makes the chosen and rejected sums `ld_weighted_sums`, as TRL does for
    the policy and the reference alike (the loop scores the reference with the same call);
    lengths stay token counts, and the plain chosen sums go to `policy_chosen_nll_logps`, the
    NLL terms' tokens (TRL's cross-entropy does not see ld_alpha).
    """
    labels = batch["labels"]
    if full_chosen:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    token_logps, _ = scorer(batch["input_ids"], batch["attention_mask"], labels)
    sums, lengths = row_sums(token_logps, batch["labels"])
    half = sums.shape[0] // 2
    preference = sums
    if ld_alpha is not None:
        preference = ld_weighted_sums(token_logps, scored_mask(batch["labels"]), ld_alpha)
    inputs = {
        "policy_chosen_logps": preference[:half],
        "policy_rejected_logps": preference[half:],
        "chosen_lengths": lengths[:half],
        "rejected_lengths": lengths[half:],
    }
    if ld_alpha is not None:
        inputs["policy_chosen_nll_logps"] = sums[:half]
    if full_chosen:
        full_sums, full_lengths = row_sums(token_logps[:half], labels[:half])
        inputs["policy_chosen_full_logps"] = full_sums
        inputs["chosen_full_lengths"] = full_lengths
    if reference is not None:
        inputs["ref_chosen_logps"] = reference("chosen", batch["index"])
        inputs["ref_rejected_logps"] = reference("rejected", batch["index"])
    return inputs


def sft_inputs(
    scorer: Any,
    batch: dict[str, torch.Tensor],
    reference: ReferenceLookup | None,
    kl_reference: tuple[Any, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    token_logps, token_kl = scorer(
        batch["input_ids"],
        batch["attention_mask"],
        batch["labels"],
        reference=kl_reference,
        position_ids=batch.get("position_ids"),
    )
    sums, lengths = row_sums(token_logps, batch["labels"])
    inputs = {
        "token_logps": token_logps,
        "token_mask": scored_mask(batch["labels"]),
        "policy_logps": sums,
        "lengths": lengths,
    }
    if token_kl is not None:
        inputs["token_kl"] = token_kl
    if reference is not None:
        inputs["ref_logps"] = reference("completion", batch["index"])
    return inputs


def binary_inputs(
    scorer: Any, batch: dict[str, torch.Tensor], reference: ReferenceLookup | None
) -> dict[str, torch.Tensor]:
    inputs = sft_inputs(scorer, batch, reference)
    inputs["labels"] = batch["label"]
    if "kl_input_ids" in batch:
        # KTO's z0 is a detached estimate: no gradient through the mismatched pairs.
        with torch.no_grad():
            kl_logps, _ = scorer(
                batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_labels"]
            )
        inputs["policy_kl_logps"] = row_sums(kl_logps, batch["kl_labels"])[0]
        if reference is not None:
            inputs["ref_kl_logps"] = reference("kl", batch["index"])
    return inputs


def ranking_inputs(
    scorer: Any, batch: dict[str, torch.Tensor], reference: ReferenceLookup | None
) -> dict[str, torch.Tensor]:
    token_logps, _ = scorer(batch["input_ids"], batch["attention_mask"], batch["labels"])
    sums, lengths = row_sums(token_logps, batch["labels"])
    shape = batch["rewards"].shape
    return {
        "policy_logps": sums.view(shape),
        "lengths": lengths.view(shape),
        "rewards": batch["rewards"].to(sums.dtype),
    }


def reward_model_inputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A sequence-classification head's scalar on chosen rows and on rejected rows."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rewards = rewards.squeeze(-1).float()
    half = rewards.shape[0] // 2
    inputs = {"chosen_rewards": rewards[:half], "rejected_rewards": rewards[half:]}
    if "margins" in batch:
        inputs["margins"] = batch["margins"].to(rewards.dtype)
    return inputs
