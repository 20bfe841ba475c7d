"""Agreement between two judges, or between a judge and human labels.

A judged benchmark is only as trustworthy as its judge, and the usual way to show that a judge is
trustworthy is to report how often it agrees with people (or with a stronger judge) on the same
items. Two numbers are customary and both are returned here:

* raw agreement, the share of items on which both raters give the same label, which is easy to
  read but rewards raters that both pick the majority label most of the time;
* Cohen's kappa, which discounts the agreement two raters would reach by chance given how often
  each of them uses each label, so a judge that always says "candidate" does not look good merely
  because the humans also mostly said "candidate".

Ties get special treatment because the MT-Bench paper (Zheng et al., 2023) reports agreement both
with and without ties: whether a pair is "close enough to call a tie" is itself the thing raters
disagree on most, so the without-ties numbers isolate agreement on the direction of a preference.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

__all__ = ["agreement", "pairwise_label"]


def _is_missing(label: object) -> bool:
    """A failed verdict: None, or a float NaN (what pandas leaves where a verdict is absent)."""
    return label is None or (isinstance(label, float) and math.isnan(label))


def _raw_and_kappa(
    pairs: Sequence[tuple[Hashable, Hashable]],
) -> tuple[float | None, float | None]:
    """Observed agreement and Cohen's kappa of label pairs; (None, None) when there are none.

    Kappa is (p_o - p_e) / (1 - p_e), where p_o is the observed agreement and p_e the agreement
    expected by chance, the sum over categories of the product of the two raters' marginal
    frequencies, with categories the union of the labels either rater used.

    Kappa is returned as None when p_e == 1. That happens exactly when both raters used one and
    the same label for every item: then p_o is 1 as well and the formula is 0/0. No convention
    (1.0 because they agree, 0.0 because nothing beyond chance was shown) is right for every
    reader, and a made-up number would be averaged into reports silently, so it is left undefined.
    The check is on the number of categories rather than on the float p_e, so rounding can never
    turn a defined kappa into None or the other way round.
    """
    n = len(pairs)
    if n == 0:
        return None, None
    observed = sum(1 for a, b in pairs if a == b) / n
    counts_a: dict[Hashable, int] = {}
    counts_b: dict[Hashable, int] = {}
    for a, b in pairs:
        counts_a[a] = counts_a.get(a, 0) + 1
        counts_b[b] = counts_b.get(b, 0) + 1
    categories = set(counts_a) | set(counts_b)
    if len(categories) == 1:
        return observed, None
    expected = sum(counts_a.get(c, 0) * counts_b.get(c, 0) for c in categories) / (n * n)
    return observed, (observed - expected) / (1.0 - expected)


def agreement(
    labels_a: Sequence[Hashable | None],
    labels_b: Sequence[Hashable | None],
    *,
    tie_label: Hashable | None = "tie",
) -> dict[str, Any]:
    """Raw agreement and Cohen's kappa of two raters over the same items, with and without ties.

    `labels_a[i]` and `labels_b[i]` must be the two raters' labels for the same item i, so the
    sequences must have equal lengths (a ValueError names both otherwise: a silent zip would pair
    up the wrong items). A None (or float NaN) label is a failed verdict; the pair it belongs to is
    skipped, since there is nothing to agree or disagree with.

    "Without ties" drops every pair in which either label equals `tie_label`. With
    `tie_label=None` nothing beyond the failed verdicts is dropped, so both halves coincide.

    Returns a JSON-serialisable dict:

    * `n`: pairs with both labels present;
    * `raw_agreement`: share of those pairs with equal labels (None when `n` is 0);
    * `cohen_kappa`: see `_raw_and_kappa`; None when `n` is 0 or when kappa is undefined because
      both raters used a single, identical label throughout;
    * `n_without_ties`, `raw_agreement_without_ties`, `cohen_kappa_without_ties`: the same over
      the pairs left after dropping ties.
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(
            f"agreement needs one label per item from each rater, got {len(labels_a)} labels "
            f"in labels_a and {len(labels_b)} in labels_b"
        )
    pairs = [
        (a, b)
        for a, b in zip(labels_a, labels_b, strict=True)
        if not _is_missing(a) and not _is_missing(b)
    ]
    if tie_label is None:
        without_ties = pairs
    else:
        without_ties = [(a, b) for a, b in pairs if a != tie_label and b != tie_label]
    raw, kappa = _raw_and_kappa(pairs)
    raw_nt, kappa_nt = _raw_and_kappa(without_ties)
    return {
        "n": len(pairs),
        "raw_agreement": raw,
        "cohen_kappa": kappa,
        "n_without_ties": len(without_ties),
        "raw_agreement_without_ties": raw_nt,
        "cohen_kappa_without_ties": kappa_nt,
    }


def pairwise_label(preference: float, *, tol: float = 1e-9) -> str:
    """Map an AlpacaEval preference to the label a human annotator would have given.

    AlpacaEval encodes a verdict as a number in [1, 2]: 1 means the baseline (output_1) is better,
    2 the candidate (output_2), and weighted judges return the probability-weighted value in
    between. To compare such a judge with categorical human labels the number has to be cut: below
    1.5 is "baseline", above 1.5 is "candidate", and 1.5 itself (within `tol`, because a weighted
    judge that is exactly undecided can land a rounding error away from it) is "tie". The legacy
    encoding 0 for a draw is accepted as "tie", as AlpacaEval itself does.

    NaN, None and values outside [1, 2] raise ValueError: they are failed or malformed verdicts,
    and labelling them would invent a preference the judge never expressed.
    """
    if preference is None or math.isnan(preference):
        raise ValueError(f"no preference to label: {preference!r} is a failed verdict")
    if preference == 0:
        return "tie"
    if not 1.0 <= preference <= 2.0:
        raise ValueError(f"an AlpacaEval preference lies in [1, 2], got {preference!r}")
    if abs(preference - 1.5) <= tol:
        return "tie"
    return "candidate" if preference > 1.5 else "baseline"
