"""Agreement analytics (pure functions, no Django): how well people agree with each other
(Krippendorff's alpha), how well each judge agrees with them (correlation with the human
mean, pair picks), and seed 001's Figure 3 heatmap; the charts that show it come from
`common.charts`.

The pairwise statistics (pearson, spearman, the summed score that picks a pair) come from
`annotation.core.agreement`, so that the agreement page and this one never count differently.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from annotation.core.agreement import ATTRIBUTES, PAIR_ATTRIBUTES, Scores, pearson, spearman
from common.charts import heatmap_svg, unit_bars_svg

LEVELS = ("nominal", "ordinal", "interval")
HEATMAP_LABELS = (*(f"d_{a}" for a in ATTRIBUTES), "human_preference")

# Completion and rater ids: ints from the database, anything hashable in tests.
Unit = TypeVar("Unit", bound=Hashable)
Rater = TypeVar("Rater", bound=Hashable)


# --- Krippendorff's alpha -----------------------------------------------------------------


def krippendorff_alpha(
    units: Mapping[Unit, Mapping[Rater, float | None]], level: str = "interval"
) -> float | None:
    """Krippendorff's alpha over units (completion id -> {rater id -> value}).

    The coincidence-matrix form of Krippendorff (2011), "Computing Krippendorff's
    Alpha-Reliability": alpha = 1 - (n - 1) * sum(o_ck d_ck) / sum(n_c n_k d_ck). It takes
    any number of raters and missing values; a unit with fewer than two values cannot be
    paired and is left out. None when undefined: no pairable values, or no variation at all
    (every value the same), where the expected disagreement is zero.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    # o[(c, k)]: coincidences of values c and k within units, each unit weighted 1/(m_u - 1)
    # so that every pairable value counts once in the margins, however many raters it had.
    o: defaultdict[tuple[float, float], float] = defaultdict(float)
    for ratings in units.values():
        counts = Counter(v for v in ratings.values() if v is not None)
        m = sum(counts.values())
        if m < 2:
            continue
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                o[(c, k)] += n_c * (n_k - (c == k)) / (m - 1)
    margins: defaultdict[float, float] = defaultdict(float)
    for (c, _), weight in o.items():
        margins[c] += weight
    n = sum(margins.values())
    if n < 2:
        return None
    delta = _metric(level, margins)
    observed = sum(w * delta(c, k) for (c, k), w in o.items())
    expected = sum(
        n_c * n_k * delta(c, k) for c, n_c in margins.items() for k, n_k in margins.items()
    )
    if expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


def _metric(level: str, margins: Mapping[float, float]) -> Callable[[float, float], float]:
    """The squared difference function delta^2(c, k) of the level of measurement."""
    if level == "nominal":
        return lambda c, k: float(c != k)
    if level == "interval":
        return lambda c, k: float(c - k) ** 2
    # Ordinal: the distance between two ranks is the number of values between them, counting
    # the two end values half (Krippendorff 2011, eq. for the ordinal metric).
    values = sorted(margins)
    cumulative: dict[float, float] = {}
    running = 0.0
    for v in values:
        cumulative[v] = running + margins[v] / 2  # mid-rank position of value v
        running += margins[v]
    return lambda c, k: (cumulative[k] - cumulative[c]) ** 2


# --- Judge against people -----------------------------------------------------------------


@dataclass
class AttributeCorrelation:
    attribute: str
    n: int
    pearson: float | None
    spearman: float | None


def judge_vs_human_mean(
    human: Mapping[Unit, Mapping[Rater, Scores]], judge: Mapping[Unit, Scores]
) -> list[AttributeCorrelation]:
    """Per attribute, the judge's correlation with the mean human score, on the completions
    that the judge and at least one person rated. The mean, not each person, because
    annotators differ in number per completion and a judge should be compared to the crowd."""
    common = [cid for cid, by_user in human.items() if by_user and cid in judge]
    result = []
    for attribute in ATTRIBUTES:
        x = [_mean([s[attribute] for s in human[cid].values()]) for cid in common]
        y = [float(judge[cid][attribute]) for cid in common]
        result.append(AttributeCorrelation(attribute, len(common), pearson(x, y), spearman(x, y)))
    return result


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


@dataclass
class PickAgreement:
    n: int  # human picks whose two completions the judge rated
    agree: int  # the judge's sum is higher for the completion the person chose
    ties: int  # the judge's sums are equal: the judge makes no pair there

    @property
    def rate(self) -> float | None:
        """Agreement among the picks where the judge prefers one side. Ties are left out,
        as `best_worst_pair` makes no pair for a tie and the agreement page skips those."""
        decided = self.n - self.ties
        return self.agree / decided if decided else None


def pair_sum(scores: Scores) -> int:
    """Seed 001's pair score: helpfulness + correctness + coherence."""
    return sum(scores[a] for a in PAIR_ATTRIBUTES)


def pick_agreement(
    picks: Iterable[tuple[Unit, Unit]], judge_scores: Mapping[Unit, Scores]
) -> PickAgreement:
    """How often people's (chosen, rejected) picks (ties already excluded) agree with the
    judge's summed scores. Picks with a completion the judge did not rate are skipped."""
    n = agree = ties = 0
    for chosen, rejected in picks:
        if chosen not in judge_scores or rejected not in judge_scores:
            continue
        n += 1
        difference = pair_sum(judge_scores[chosen]) - pair_sum(judge_scores[rejected])
        agree += difference > 0
        ties += difference == 0
    return PickAgreement(n, agree, ties)


@dataclass
class Heatmap:
    labels: list[str]
    matrix: list[list[float | None]]
    n: int


def preference_heatmap(
    picks: Iterable[tuple[int, int]], judge_scores: Mapping[int, Scores]
) -> Heatmap:
    """Seed 001, Figure 3: Pearson correlations among the judge's score differences and the
    human preference, over people's (chosen, rejected) picks that the judge rated.

    Each pair is oriented by completion id (first = lower id) rather than as chosen minus
    rejected: otherwise the preference would be +1 for every pair and correlate with nothing.
    Columns: d_<attribute> = judge score of first - of second; human_preference = +1 when the
    person chose the first, -1 otherwise. None where a column does not vary.
    """
    columns: list[list[float]] = [[] for _ in HEATMAP_LABELS]
    for chosen, rejected in picks:
        if chosen not in judge_scores or rejected not in judge_scores:
            continue
        first, second = sorted((chosen, rejected))
        for i, attribute in enumerate(ATTRIBUTES):
            columns[i].append(
                float(judge_scores[first][attribute] - judge_scores[second][attribute])
            )
        columns[-1].append(1.0 if chosen == first else -1.0)
    size = len(columns)
    matrix: list[list[float | None]] = [[None] * size for _ in range(size)]
    for i in range(size):
        for j in range(i, size):
            # pearson(x, x) could be 1 +- an ulp; the diagonal is exactly 1 where defined.
            r = pearson(columns[i], columns[j])
            matrix[i][j] = matrix[j][i] = (1.0 if r is not None else None) if i == j else r
    return Heatmap(list(HEATMAP_LABELS), matrix, len(columns[-1]))


# --- The whole report -----------------------------------------------------------------------


@dataclass
class AttributeAlpha:
    attribute: str
    interval: float | None
    ordinal: float | None


@dataclass
class JudgeReport:
    name: str
    completions: int  # completions the judge and at least one person rated
    correlations: list[AttributeCorrelation]
    picks: PickAgreement
    heatmap: Heatmap
    correlation_svg: str
    heatmap_svg: str


@dataclass
class AnalyticsReport:
    rated_completions: int  # completions with at least one human rating
    units: int  # completions with two or more human ratings: what alpha can use
    annotators: int
    alphas: list[AttributeAlpha]
    alpha_svg: str
    picks: int
    judges: list[JudgeReport]


def analytics_report(
    human: Mapping[int, Mapping[Hashable, Scores]],
    judges: Mapping[str, Mapping[int, Scores]],
    picks: Sequence[tuple[int, int]],
) -> AnalyticsReport:
    """Everything the analytics page shows, from human scores (completion -> user ->
    scores), each judge's scores (judge name -> completion -> scores) and people's picks."""
    alphas = [
        AttributeAlpha(
            attribute,
            krippendorff_alpha(_attribute_units(human, attribute), "interval"),
            krippendorff_alpha(_attribute_units(human, attribute), "ordinal"),
        )
        for attribute in ATTRIBUTES
    ]
    alpha_svg = unit_bars_svg(
        list(ATTRIBUTES),
        [a.interval for a in alphas],
        "Krippendorff's alpha (interval) among annotators",
    )
    reports = []
    for name, scores in judges.items():
        correlations = judge_vs_human_mean(human, scores)
        heatmap = preference_heatmap(picks, scores)
        labels = [
            f"{c.attribute} {sym}"
            for c in correlations
            for sym in ("r", "\N{GREEK SMALL LETTER RHO}")
        ]
        values = [v for c in correlations for v in (c.pearson, c.spearman)]
        reports.append(
            JudgeReport(
                name=name,
                completions=correlations[0].n,
                correlations=correlations,
                picks=pick_agreement(picks, scores),
                heatmap=heatmap,
                correlation_svg=unit_bars_svg(
                    labels, values, f"{name}: correlation with the human mean"
                ),
                heatmap_svg=heatmap_svg(
                    heatmap.labels, heatmap.matrix, f"{name}: score differences vs human picks"
                ),
            )
        )
    return AnalyticsReport(
        rated_completions=sum(1 for by_user in human.values() if by_user),
        units=sum(1 for by_user in human.values() if len(by_user) >= 2),
        annotators=len({user for by_user in human.values() for user in by_user}),
        alphas=alphas,
        alpha_svg=alpha_svg,
        picks=len(picks),
        judges=reports,
    )


def _attribute_units(
    human: Mapping[int, Mapping[Hashable, Scores]], attribute: str
) -> dict[int, dict[Hashable, float]]:
    return {
        cid: {user: float(s[attribute]) for user, s in by_user.items()}
        for cid, by_user in human.items()
    }
