"""Agreement between two raters (pure functions): per-attribute correlations on the
completions both rated, and how often the pairs they would build agree."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from annotation.core.judges.base import ATTRIBUTES

# Seed 001 picks chosen/rejected by the sum of these three.
PAIR_ATTRIBUTES = ("helpfulness", "correctness", "coherence")

Scores = Mapping[str, int]


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """None when undefined: fewer than two points, or a rater who gave one value only."""
    n = len(x)
    if n != len(y) or n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return sxy / math.sqrt(sxx * syy)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    return pearson(ranks(x), ranks(y)) if len(x) == len(y) else None


def best_worst_pair(
    scores: Mapping[int, Scores], attributes: Sequence[str] = PAIR_ATTRIBUTES
) -> tuple[int, int] | None:
    """(chosen, rejected) completion ids by summed score; None when best and worst tie.

    Among equal sums the lower id wins, so that two raters with the same scores agree.
    """
    if len(scores) < 2:
        return None
    totals = {cid: sum(s[a] for a in attributes) for cid, s in scores.items()}
    best = min(totals, key=lambda c: (-totals[c], c))
    worst = min(totals, key=lambda c: (totals[c], c))
    return None if totals[best] == totals[worst] else (best, worst)


@dataclass
class AttributeAgreement:
    attribute: str
    n: int
    pearson: float | None
    spearman: float | None
    exact: float | None  # share of completions with the same score


@dataclass
class Agreement:
    completions: int
    attributes: list[AttributeAgreement]
    prompts_compared: int
    pairs_agree: int

    @property
    def pair_agreement(self) -> float | None:
        return self.pairs_agree / self.prompts_compared if self.prompts_compared else None


def agreement(
    a: Mapping[int, Scores],
    b: Mapping[int, Scores],
    prompt_of: Mapping[int, int],
) -> Agreement:
    """`a` and `b` map completion id -> scores; `prompt_of` maps completion id -> prompt id."""
    common = sorted(set(a) & set(b))
    per_attribute = []
    for attribute in ATTRIBUTES:
        x = [float(a[c][attribute]) for c in common]
        y = [float(b[c][attribute]) for c in common]
        exact = sum(p == q for p, q in zip(x, y, strict=True)) / len(common) if common else None
        per_attribute.append(
            AttributeAgreement(attribute, len(common), pearson(x, y), spearman(x, y), exact)
        )
    by_prompt: dict[int, list[int]] = {}
    for c in common:
        by_prompt.setdefault(prompt_of[c], []).append(c)
    compared = agree = 0
    for cids in by_prompt.values():
        pair_a = best_worst_pair({c: a[c] for c in cids})
        pair_b = best_worst_pair({c: b[c] for c in cids})
        if pair_a is None or pair_b is None:
            continue
        compared += 1
        agree += pair_a == pair_b
    return Agreement(len(common), per_attribute, compared, agree)


@dataclass(frozen=True)
class PairwiseAgreement:
    pairs: int  # pairs of one prompt's completions that the truth ranks apart
    agreed: float  # of them, those the scalar orders the same way (a tie counts half)

    @property
    def rate(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None


def pairwise_agreement(
    groups: Sequence[Sequence[int]],
    score: Mapping[int, float],
    truth: Mapping[int, float],
) -> PairwiseAgreement:
    """How often `score` (a reward model's) orders two completions of one prompt as
    `truth` (the oracle's score sum) does, over the pairs the truth does not tie; each
    group is one prompt's completion ids. Ids missing from either side are left out."""
    pairs, agreed = 0, 0.0
    for group in groups:
        ids = [c for c in group if c in score and c in truth]
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                if truth[a] == truth[b]:
                    continue
                pairs += 1
                said = (score[a] > score[b]) - (score[a] < score[b])
                right = 1 if truth[a] > truth[b] else -1
                agreed += 1.0 if said == right else 0.5 if said == 0 else 0.0
    return PairwiseAgreement(pairs=pairs, agreed=agreed)
