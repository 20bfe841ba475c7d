"""Which demonstrations make up each point of the curve, and which test items come first.

- A *round* is one demonstration per label. Labels are visited in first-appearance order (the
  order they first occur in the split), and each label contributes its items in file order:
  round 1 is every label's first item, round 2 every label's second item, and so on. Nothing is
  shuffled, so the same file always gives the same prompts. Round r's prompt holds rounds 1..r.
  A label with no item left is skipped in later rounds (LongICLBench instead borrows an extra
  item from the next label; with the datasets' train sets that never happens in rounds 1-5).
- Test items are ordered the same way, so the first N (`--limit N`) are label-balanced.
- `order=grouped` keeps each point's demonstrations but sorts them by label (all of label 1's,
  then label 2's, ... in first-appearance order): LongICLBench's ablation showing that models
  are sensitive to where a label's examples sit.
- `budget_tokens=N` adds demonstrations in round-robin order while the demonstration prefix
  (instruction + header + demonstrations) stays within N tokens, stopping at the first one that
  does not fit. The prefix is measured as the sum of its parts (each demonstration ends with a
  newline, so tokens hardly ever merge across them), which is what makes one pass enough.
- Few-NERD sentences carry several entity types each, so "one per label" becomes coverage:
  round r is the shortest prefix of the (pre-ordered) LongICLBench training file in which every
  entity type occurs at least r times. This reproduces LongICLBench's 57/114/170 sentences for
  rounds 1-3 (it hard-codes 224 and 281 for rounds 4-5 where coverage gives 219 and 274).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Sequence

from evalharness.errors import InputError


def first_appearance(labels: Iterable[Hashable]) -> list[Hashable]:
    """Distinct labels in the order they first occur."""
    return list(dict.fromkeys(labels))


def round_robin_rounds(labels: Sequence[Hashable], per_label: int | None = None) -> list[list[int]]:
    """Indices per round: round k holds the k-th item of every label that still has one."""
    by_label: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        bucket = by_label.setdefault(label, [])
        if per_label is None or len(bucket) < per_label:
            bucket.append(index)
    depth = max((len(b) for b in by_label.values()), default=0)
    return [[b[k] for b in by_label.values() if len(b) > k] for k in range(depth)]


def round_robin_order(labels: Sequence[Hashable], per_label: int | None = None) -> list[int]:
    """All indices in round-robin order (at most `per_label` per label)."""
    return [i for one_round in round_robin_rounds(labels, per_label) for i in one_round]


def rounds_prefix(rounds: Sequence[Sequence[int]], n_rounds: int, what: str) -> list[int]:
    """Demonstration indices for `n_rounds` rounds (rounds 1..n, concatenated)."""
    if n_rounds > len(rounds):
        raise InputError(
            f"{what}: round {n_rounds} asked, but the training data has only {len(rounds)} "
            "rounds (items per label)"
        )
    return [i for one_round in rounds[:n_rounds] for i in one_round]


def grouped(indices: Sequence[int], labels: Sequence[Hashable]) -> list[int]:
    """The same demonstrations sorted by label, labels in first-appearance order (stable)."""
    rank = {label: k for k, label in enumerate(first_appearance(labels[i] for i in indices))}
    return sorted(indices, key=lambda i: rank[labels[i]])


def under_budget(
    order: Iterable[int], cost: Callable[[int], int], base: int, budget: int
) -> tuple[list[int], int]:
    """Leading items of `order` whose costs, plus `base`, stay within `budget`; and the total."""
    chosen, total = [], base
    for index in order:
        step = cost(index)
        if total + step > budget:
            break
        chosen.append(index)
        total += step
    return chosen, total


def coverage_rounds(types: Sequence[Collection[str]], n_rounds: int, what: str) -> int:
    """Length of the shortest prefix in which every type of the pool occurs `n_rounds` times."""
    # First-appearance order, so the error below names the same type on every run.
    seen: dict[str, int] = dict.fromkeys((k for item in types for k in item), 0)
    short = len(seen)  # types still under n_rounds occurrences
    if n_rounds <= 0 or not seen:
        return 0
    for length, item_types in enumerate(types, start=1):
        for kind in item_types:
            seen[kind] += 1
            if seen[kind] == n_rounds:
                short -= 1
        if short == 0:
            return length
    rarest = min(seen, key=lambda k: seen[k])
    raise InputError(
        f"{what}: round {n_rounds} needs every entity type {n_rounds} times, but "
        f"{rarest!r} occurs only {seen[rarest]} times in the training data"
    )
