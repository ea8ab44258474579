"""Agreement analytics (pure functions, no Django): how well people agree with each other
(Krippendorff's alpha), how well each judge agrees with them (correlation with the human
mean, pair picks), and seed 001's Figure 3 heatmap; plus the inline SVG charts that show it.

The pairwise statistics (pearson, spearman, the summed score that picks a pair) come from
`annotation.agreement`, so that the agreement page and this one never count differently.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from xml.sax.saxutils import escape

from annotation.agreement import ATTRIBUTES, PAIR_ATTRIBUTES, Scores, pearson, spearman

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
    alpha_svg = bar_chart_svg(
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
                correlation_svg=bar_chart_svg(
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


# --- SVG ----------------------------------------------------------------------------------

_BLUE, _WHITE, _RED = (33, 102, 172), (255, 255, 255), (178, 24, 43)
_NONE_FILL = "#e4e7ec"
# Characters XML 1.0 forbids even when escaped: dropped, so the SVG always parses.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: object) -> str:
    """Escape for XML text and attribute values: every string put into an SVG goes here,
    which is what makes embedding the SVG unescaped in a page safe."""
    return escape(_INVALID_XML.sub("", str(value)), {'"': "&quot;", "'": "&#39;"})


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _format(value: float | None) -> str:
    value = _finite(value)
    if value is None:
        return "—"
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def diverging_colour(value: float | None) -> str:
    """-1 blue, 0 white, +1 red (linear in between); grey where undefined."""
    value = _finite(value)
    if value is None:
        return _NONE_FILL
    t = max(-1.0, min(1.0, value))
    end = _RED if t > 0 else _BLUE
    rgb = (round(w + (e - w) * abs(t)) for w, e in zip(_WHITE, end, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'aria-label="{_text(title)}" font-family="system-ui, sans-serif" font-size="12">'
        f"<title>{_text(title)}</title>"
        f'<text x="4" y="16" font-size="14" font-weight="600">{_text(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def heatmap_svg(labels: Sequence[str], matrix: Sequence[Sequence[float | None]], title: str) -> str:
    """A square matrix of values in [-1, 1] as a self-contained SVG (no scripts, no external
    assets): coloured cells with their values, row and column labels, a colour legend."""
    size, cell = len(labels), 64
    left, top = 140, 130
    legend_x = left + size * cell + 24
    width, height = legend_x + 70, top + max(size * cell, 200) + 12
    body = [
        '<defs><linearGradient id="diverging" x1="0" y1="0" x2="0" y2="1">'
        f'<stop offset="0" stop-color="{diverging_colour(1)}"/>'
        f'<stop offset="0.5" stop-color="{diverging_colour(0)}"/>'
        f'<stop offset="1" stop-color="{diverging_colour(-1)}"/>'
        "</linearGradient></defs>"
    ]
    for i, label in enumerate(labels):
        y = top + i * cell + cell / 2
        x = left + i * cell + cell / 2
        body.append(
            f'<text class="row-label" x="{left - 6}" y="{y:.0f}" text-anchor="end" '
            f'dominant-baseline="middle">{_text(label)}</text>'
        )
        # Column labels slant upwards so that long names do not overlap.
        body.append(
            f'<text class="col-label" x="{x:.0f}" y="{top - 6}" '
            f'transform="rotate(-45 {x:.0f} {top - 6})">{_text(label)}</text>'
        )
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            x, y = left + j * cell, top + i * cell
            shown = _format(value)
            finite = _finite(value)
            ink = "#fff" if finite is not None and abs(finite) > 0.6 else "#1d2330"
            body.append(
                f"<g><title>{_text(labels[i])} vs {_text(labels[j])}: {_text(shown)}</title>"
                f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{diverging_colour(value)}" stroke="#fff" data-value="{_text(shown)}"/>'
                f'<text x="{x + cell / 2:.0f}" y="{y + cell / 2:.0f}" text-anchor="middle" '
                f'dominant-baseline="middle" fill="{ink}">{_text(shown)}</text></g>'
            )
    body.append(
        f'<rect class="legend" x="{legend_x}" y="{top}" width="16" height="200" '
        'fill="url(#diverging)" stroke="#d9dee7"/>'
    )
    for text, dy in (("+1", 0), ("0", 100), ("-1", 200)):
        body.append(
            f'<text x="{legend_x + 22}" y="{top + dy}" dominant-baseline="middle">{text}</text>'
        )
    return _svg(width, height, title, body)


def bar_chart_svg(labels: Sequence[str], values: Sequence[float | None], title: str) -> str:
    """Horizontal bars on a fixed scale: 0..1 when every value is non-negative, else -1..1,
    so that charts of the same statistic compare at a glance. None is shown as "—"."""
    defined = [v for v in map(_finite, values) if v is not None]
    low = -1.0 if any(v < 0 for v in defined) else 0.0
    left, plot, row = 150, 300, 24
    top = 40
    width, height = left + plot + 60, top + row * len(labels) + 24

    def x_of(v: float) -> float:
        return left + (max(low, min(1.0, v)) - low) / (1.0 - low) * plot

    body = []
    for i, (label, raw) in enumerate(zip(labels, values, strict=True)):
        value = _finite(raw)
        y = top + i * row
        body.append(
            f'<text class="bar-label" x="{left - 6}" y="{y + row / 2:.0f}" text-anchor="end" '
            f'dominant-baseline="middle">{_text(label)}</text>'
        )
        if value is not None:
            x0, x1 = sorted((x_of(0.0), x_of(value)))
            body.append(
                f'<rect class="bar" x="{x0:.1f}" y="{y + 4}" width="{x1 - x0:.1f}" '
                f'height="{row - 8}" fill="{diverging_colour(value)}" stroke="#667085" '
                f'stroke-width="0.5"/>'
            )
        body.append(
            f'<text class="bar-value" x="{left + plot + 6}" y="{y + row / 2:.0f}" '
            f'dominant-baseline="middle">{_text(_format(value))}</text>'
        )
    axis_bottom = top + row * len(labels)
    zero = x_of(0.0)
    body.append(
        f'<line x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" y2="{axis_bottom}" stroke="#1d2330"/>'
    )
    for tick in (low, 0.0, 1.0) if low < 0 else (0.0, 0.5, 1.0):
        body.append(
            f'<text x="{x_of(tick):.1f}" y="{axis_bottom + 16}" text-anchor="middle" '
            f'fill="#667085">{tick:g}</text>'
        )
    return _svg(width, height, title, body)
