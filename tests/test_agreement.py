"""Judge agreement: raw agreement and Cohen's kappa, with and without ties."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evalharness.stats.agreement import agreement, pairwise_label


def _from_table(table: dict[tuple[str, str], int]) -> tuple[list[str], list[str]]:
    """Two label lists whose cross-tabulation is `table` ((label_a, label_b) -> count)."""
    labels_a: list[str] = []
    labels_b: list[str] = []
    for (a, b), count in table.items():
        labels_a += [a] * count
        labels_b += [b] * count
    return labels_a, labels_b


def _kappa_from_confusion(labels_a: list[str], labels_b: list[str]) -> float:
    """Kappa from a numpy confusion matrix: trace for p_o, outer product of margins for p_e."""
    categories = sorted(set(labels_a) | set(labels_b))
    index = {c: i for i, c in enumerate(categories)}
    confusion = np.zeros((len(categories), len(categories)))
    np.add.at(confusion, ([index[a] for a in labels_a], [index[b] for b in labels_b]), 1)
    confusion /= confusion.sum()
    p_o = np.trace(confusion)
    p_e = confusion.sum(axis=1) @ confusion.sum(axis=0)
    return float((p_o - p_e) / (1 - p_e))


def test_classic_two_by_two_table_gives_kappa_0_4() -> None:
    # p_o = 35/50 = 0.7; margins a: yes 25/50, b: yes 30/50; p_e = 0.5*0.6 + 0.5*0.4 = 0.5.
    labels_a, labels_b = _from_table(
        {("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15}
    )
    result = agreement(labels_a, labels_b)
    assert result["n"] == 50
    assert result["raw_agreement"] == pytest.approx(0.7)
    assert result["cohen_kappa"] == pytest.approx(0.4)
    # No ties in the data: the without-ties half is the same.
    assert result["n_without_ties"] == 50
    assert result["cohen_kappa_without_ties"] == pytest.approx(0.4)
    json.dumps(result)


def test_kappa_matches_a_confusion_matrix_computation_on_random_labels() -> None:
    rng = np.random.default_rng(7)
    categories = ["baseline", "candidate", "tie"]
    labels_a = list(rng.choice(categories, size=300, p=[0.45, 0.4, 0.15]))
    # b agrees with a 60% of the time and is otherwise drawn with different margins.
    noise = rng.choice(categories, size=300, p=[0.2, 0.5, 0.3])
    labels_b = [
        a if keep else n for a, n, keep in zip(labels_a, noise, rng.random(300) < 0.6, strict=True)
    ]

    result = agreement(labels_a, labels_b)
    assert result["cohen_kappa"] == pytest.approx(_kappa_from_confusion(labels_a, labels_b))
    assert result["raw_agreement"] == pytest.approx(
        np.mean(np.asarray(labels_a) == np.asarray(labels_b))
    )

    kept = [(a, b) for a, b in zip(labels_a, labels_b, strict=True) if "tie" not in (a, b)]
    kept_a, kept_b = [a for a, _ in kept], [b for _, b in kept]
    assert result["n_without_ties"] == len(kept) < 300
    assert result["cohen_kappa_without_ties"] == pytest.approx(
        _kappa_from_confusion(kept_a, kept_b)
    )
    assert 0 < result["cohen_kappa"] < 1


def test_ties_are_dropped_when_either_rater_says_tie() -> None:
    labels_a = ["candidate", "tie", "baseline", "candidate", "baseline", "tie"]
    labels_b = ["candidate", "candidate", "tie", "baseline", "baseline", "tie"]
    result = agreement(labels_a, labels_b)
    assert result["n"] == 6
    assert result["raw_agreement"] == pytest.approx(3 / 6)
    # Left: (candidate, candidate), (candidate, baseline), (baseline, baseline).
    assert result["n_without_ties"] == 3
    assert result["raw_agreement_without_ties"] == pytest.approx(2 / 3)
    # p_e = (2/3)(1/3) + (1/3)(2/3) = 4/9; kappa = (2/3 - 4/9) / (5/9) = 0.4.
    assert result["cohen_kappa_without_ties"] == pytest.approx(0.4)


def test_custom_tie_label_and_no_tie_label() -> None:
    labels_a = [1, 0, 2, 2]
    labels_b = [1, 1, 2, 0]
    assert agreement(labels_a, labels_b, tie_label=0)["n_without_ties"] == 2
    result = agreement(labels_a, labels_b, tie_label=None)
    assert result["n_without_ties"] == result["n"] == 4
    assert result["cohen_kappa_without_ties"] == result["cohen_kappa"]


def test_failed_verdicts_are_skipped_pairwise() -> None:
    labels_a, labels_b = _from_table(
        {("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15}
    )
    # A None (or NaN) on either side removes only that pair, and kappa is unchanged.
    result = agreement(
        labels_a + [None, "yes", float("nan"), None], labels_b + ["no", None, "yes", None]
    )
    assert result["n"] == 50
    assert result["cohen_kappa"] == pytest.approx(0.4)


def test_mismatched_lengths_name_both() -> None:
    with pytest.raises(ValueError, match=r"3 labels in labels_a and 2 in labels_b"):
        agreement(["a", "b", "c"], ["a", "b"])


def test_undefined_kappa_is_none_and_empty_input_is_none() -> None:
    same = agreement(["candidate"] * 4, ["candidate"] * 4)
    assert same["raw_agreement"] == 1.0
    assert same["cohen_kappa"] is None
    # Everything is a tie: nothing is left without ties.
    ties = agreement(["tie", "tie"], ["tie", "tie"])
    assert ties["n_without_ties"] == 0
    assert ties["raw_agreement_without_ties"] is None
    assert ties["cohen_kappa_without_ties"] is None
    empty = agreement([], [])
    assert empty["n"] == 0 and empty["raw_agreement"] is None and empty["cohen_kappa"] is None
    # Two categories, perfect agreement: kappa is 1, and systematic disagreement is negative.
    assert agreement(["a", "b"], ["a", "b"])["cohen_kappa"] == pytest.approx(1.0)
    assert agreement(["a", "b"], ["b", "a"])["cohen_kappa"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("preference", "label"),
    [
        (1.0, "baseline"),
        (1.4999, "baseline"),
        (1.5, "tie"),
        (1.5 + 1e-12, "tie"),
        (0, "tie"),
        (1.5001, "candidate"),
        (2.0, "candidate"),
    ],
)
def test_pairwise_label(preference: float, label: str) -> None:
    assert pairwise_label(preference) == label


def test_pairwise_label_rejects_failed_and_malformed_verdicts() -> None:
    with pytest.raises(ValueError, match="failed verdict"):
        pairwise_label(math.nan)
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        pairwise_label(2.5)
    assert pairwise_label(1.5 + 1e-3, tol=1e-2) == "tie"
