"""How far a judge can be trusted (issue 18.2): position bias and self-consistency,
measured on its own ratings. Pure: no Django.

- Position bias: the item is rated again with its completions in reverse order (every
  completion moves, the first and the last swap), and the ratings are mapped back. The
  best and the worst pick (by helpfulness + correctness + coherence, seed 001's sum) flip
  when the set of completions sharing the top (or bottom) sum differs between the orders;
  `position_flip_rate` is the share of items where either flips. `mean_abs_delta` is the
  mean absolute change of each attribute's score between the orders.
- Self-consistency: the item is rated N times at the judge's temperature; Krippendorff's
  alpha (interval metric) between the repeats, per attribute, over the (item, completion)
  units. Alpha is None where it is undefined: fewer than two units with two values, or no
  variation at all (every score the same says nothing about reliability).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from annotation.core.agreement import PAIR_ATTRIBUTES
from annotation.core.judges.base import ATTRIBUTES, JudgeItem

Scores = Mapping[str, float]


def reversed_order(k: int) -> tuple[int, ...]:
    """The permutation the position audit asks: position i shows completion order[i]."""
    return tuple(range(k - 1, -1, -1))


def permuted_item(item: JudgeItem, order: Sequence[int]) -> JudgeItem:
    """`item` with its completions shown in `order` (a distinct key, and cache key)."""
    if sorted(order) != list(range(len(item.completions))):
        raise ValueError(f"{list(order)} is not a permutation of {len(item.completions)} places")
    return replace(
        item,
        key=f"{item.key}|order:{','.join(map(str, order))}",
        completions=tuple(item.completions[i] for i in order),
    )


def mapped_back(scores: Sequence[Scores], order: Sequence[int]) -> list[Scores]:
    """Ratings of a permuted item, in the original completion order."""
    out: list[Scores | None] = [None] * len(order)
    for position, original in enumerate(order):
        out[original] = scores[position]
    return [s for s in out if s is not None]


def _pick_sets(scores: Sequence[Scores]) -> tuple[frozenset[int], frozenset[int]]:
    sums = [sum(s[a] for a in PAIR_ATTRIBUTES) for s in scores]
    top, bottom = max(sums), min(sums)
    return (
        frozenset(i for i, v in enumerate(sums) if v == top),
        frozenset(i for i, v in enumerate(sums) if v == bottom),
    )


@dataclass(frozen=True)
class PositionResult:
    items: int
    best_flips: int
    worst_flips: int
    flips: int  # items where the best or the worst pick flipped
    mean_abs_delta: dict[str, float | None]

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.items if self.items else None


def position_bias(
    pairs: Sequence[tuple[Sequence[Scores], Sequence[Scores]]],
) -> PositionResult:
    """`pairs`: per item, the ratings in the original order and the permuted order's
    ratings mapped back (both in the original completion order)."""
    best = worst = either = 0
    deltas: dict[str, list[float]] = {a: [] for a in ATTRIBUTES}
    counted = 0
    for first, second in pairs:
        if len(first) != len(second) or len(first) < 2:
            continue
        counted += 1
        (b1, w1), (b2, w2) = _pick_sets(first), _pick_sets(second)
        best += b1 != b2
        worst += w1 != w2
        either += b1 != b2 or w1 != w2
        for a in ATTRIBUTES:
            deltas[a].extend(abs(x[a] - y[a]) for x, y in zip(first, second, strict=True))
    return PositionResult(
        items=counted,
        best_flips=best,
        worst_flips=worst,
        flips=either,
        mean_abs_delta={a: (sum(v) / len(v) if v else None) for a, v in deltas.items()},
    )


def krippendorff_alpha_interval(units: Sequence[Sequence[float]]) -> float | None:
    """Krippendorff's alpha with the interval metric; each unit holds the values its
    raters (here: the repeats) gave. Units with fewer than two values are not pairable."""
    pairable = [list(u) for u in units if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    if len(pairable) < 2 or n < 2:
        return None
    observed = 0.0
    for unit in pairable:
        m = len(unit)
        observed += sum((a - b) ** 2 for a in unit for b in unit) / (m - 1)
    observed /= n
    mean = sum(values) / n
    # Sum over ordered pairs of all values of (a - b)^2 = 2 n sum (v - mean)^2.
    expected = 2 * n * sum((v - mean) ** 2 for v in values) / (n * (n - 1))
    if expected == 0:
        return None
    return 1 - observed / expected


def self_consistency(repeats: Sequence[Sequence[Sequence[Scores]]]) -> dict[str, float | None]:
    """`repeats`: per item, its N ratings (each one Scores per completion). Alpha per
    attribute over the (item, completion) units."""
    out: dict[str, float | None] = {}
    for a in ATTRIBUTES:
        units: list[list[float]] = []
        for runs in repeats:
            if not runs:
                continue
            k = min(len(r) for r in runs)
            units.extend([float(r[c][a]) for r in runs] for c in range(k))
        out[a] = krippendorff_alpha_interval(units)
    return out
