"""Agreement analytics: Krippendorff's alpha, judges against people, seed 001's Figure 3
heatmap, the SVG charts, and the page that shows them."""

from __future__ import annotations

import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.urls import reverse

from annotation.core.agreement import ATTRIBUTES, best_worst_pair, pearson
from annotation.core.analytics import (
    HEATMAP_LABELS,
    analytics_report,
    judge_vs_human_mean,
    krippendorff_alpha,
    pick_agreement,
    preference_heatmap,
)
from common.charts import diverging_colour, heatmap_svg, unit_bars_svg

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four
# observers, twelve units, values 1-5, "." missing. Unit 12 has one value: not pairable.
RELIABILITY_DATA = {
    "A": "1 2 3 3 2 1 4 1 2 . . .",
    "B": "1 2 3 3 2 2 4 1 2 5 . 3",
    "C": ". 3 3 3 2 3 4 2 2 5 1 .",
    "D": "1 2 3 3 2 4 4 1 2 5 1 .",
}


def _reliability_units() -> dict[int, dict[str, float]]:
    units: dict[int, dict[str, float]] = {}
    for observer, row in RELIABILITY_DATA.items():
        for unit, value in enumerate(row.split(), start=1):
            if value != ".":
                units.setdefault(unit, {})[observer] = float(value)
    return units


def _parse(svg: str) -> ET.Element:
    # Parses only what the code under test wrote, never outside input.
    return ET.fromstring(svg)


def _scores(*values: int) -> dict[str, int]:
    return dict(zip(ATTRIBUTES, values, strict=True))


def _all(value: int) -> dict[str, int]:
    return dict.fromkeys(ATTRIBUTES, value)


# --- Krippendorff's alpha -----------------------------------------------------------------


def test_alpha_reproduces_krippendorffs_worked_example():
    units = _reliability_units()
    # The published values (nominal .743, ordinal .815, interval .849) ...
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    # ... and the exact fractions by hand: n = 40 pairable values with margins
    # n_1..n_5 = 9, 13, 10, 5, 3; within-unit disagreements only in units 2, 6 and 8.
    # Nominal: D_o sum = 2 + 4 + 2 = 8, D_e sum = 40^2 - (81+169+100+25+9) = 1216.
    assert krippendorff_alpha(units, "nominal") == pytest.approx(1 - 39 * 8 / 1216)
    # Interval: D_o sum = 2 + 40/3 + 2, D_e sum = 2 * (40 * 306 - 100^2) = 4480.
    assert krippendorff_alpha(units) == pytest.approx(1 - 39 * (4 + 40 / 3) / 4480)


def _alpha_by_pairs(units, level):
    """Alpha from its definition over pairs of values, as a check on the coincidence form."""
    pairable = [[v for v in u.values()] for u in units.values() if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    margin = {v: sum(u.count(v) for u in pairable) for v in values}

    def delta(c, k):
        if level == "nominal":
            return float(c != k)
        if level == "interval":
            return (c - k) ** 2
        lo, hi = sorted((c, k))
        between = sum(margin[g] for g in values if lo <= g <= hi)
        return (between - (margin[c] + margin[k]) / 2) ** 2

    everything = [v for u in pairable for v in u]
    n = len(everything)
    observed = sum(
        sum(delta(a, b) for i, a in enumerate(u) for j, b in enumerate(u) if i != j) / (len(u) - 1)
        for u in pairable
    )
    expected = sum(
        delta(a, b) for i, a in enumerate(everything) for j, b in enumerate(everything) if i != j
    )
    return 1 - (n - 1) * observed / expected


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_matches_its_pairwise_definition_on_random_data(level):
    rng = random.Random(7)
    for _ in range(20):
        units = {
            u: {r: float(rng.randint(0, 4)) for r in range(4) if rng.random() < 0.7}
            for u in range(rng.randint(3, 15))
        }
        expected = _alpha_by_pairs(units, level)
        assert krippendorff_alpha(units, level) == pytest.approx(expected)


def test_alpha_is_one_for_perfect_agreement_and_none_when_undefined():
    perfect = {1: {"a": 4, "b": 4, "c": 4}, 2: {"a": 0, "b": 0}, 3: {"a": 2, "c": 2}}
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(perfect, level) == pytest.approx(1.0)
    assert krippendorff_alpha({}) is None
    assert krippendorff_alpha({1: {"a": 3}, 2: {"b": 1}}) is None  # nothing pairable
    assert krippendorff_alpha({1: {"a": 2, "b": 2}, 2: {"a": 2, "b": 2}}) is None  # no variation
    # A unit with one value (or a missing one) changes nothing.
    assert krippendorff_alpha({**perfect, 9: {"a": 0}, 10: {"a": None, "b": 1}}) == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError, match="ratio"):
        krippendorff_alpha(perfect, "ratio")


def test_systematic_disagreement_gives_negative_alpha():
    units = {1: {"a": 0, "b": 4}, 2: {"a": 4, "b": 0}}
    assert krippendorff_alpha(units) < 0


# --- Judges against people ----------------------------------------------------------------


def test_judge_is_compared_with_the_mean_of_the_annotators():
    human = {
        1: {"ann": _all(4), "bob": _all(2)},  # mean 3
        2: {"ann": _all(0), "bob": _all(0)},  # mean 0
        3: {"ann": _all(2)},  # mean 2, one person is enough
        5: {"ann": _all(4)},  # the judge did not rate it
    }
    judge = {1: _all(3), 2: _all(0), 3: _all(2), 4: _all(1)}
    result = judge_vs_human_mean(human, judge)
    assert [r.attribute for r in result] == list(ATTRIBUTES)
    assert all(r.n == 3 for r in result)
    assert result[0].pearson == pytest.approx(1.0) and result[0].spearman == pytest.approx(1.0)
    flipped = judge_vs_human_mean(human, {1: _all(0), 2: _all(3), 3: _all(1)})
    assert flipped[0].pearson == pytest.approx(-1.0)
    nothing = judge_vs_human_mean(human, {9: _all(1)})
    assert nothing[0].n == 0 and nothing[0].pearson is None and nothing[0].spearman is None


def test_pick_agreement_counts_agreements_ties_and_skips_unrated():
    judge = {
        1: _scores(4, 4, 4, 0, 0),
        2: _scores(1, 1, 1, 4, 4),  # complexity and verbosity are not in the sum
        3: _scores(0, 0, 1, 0, 0),
        4: _scores(1, 1, 1, 0, 0),
        5: _scores(2, 2, 2, 0, 0),
        6: _scores(3, 2, 1, 4, 4),
    }
    result = pick_agreement([(1, 2), (3, 4), (5, 6), (7, 1)], judge)
    assert (result.n, result.agree, result.ties) == (3, 1, 1)
    assert result.rate == pytest.approx(0.5)  # ties left out: 1 of 2 decided
    assert pick_agreement([], judge).rate is None
    assert pick_agreement([(5, 6)], judge).rate is None  # only a tie


def test_pick_agreement_matches_best_worst_pair_on_two_completions():
    rng = random.Random(3)
    for _ in range(200):
        judge = {c: _scores(*(rng.randint(0, 4) for _ in ATTRIBUTES)) for c in (1, 2)}
        chosen, rejected = rng.sample([1, 2], 2)
        result = pick_agreement([(chosen, rejected)], judge)
        pair = best_worst_pair(judge)
        assert result.ties == (pair is None)
        assert result.agree == (pair == (chosen, rejected))


def test_preference_heatmap_orients_pairs_by_completion_id():
    judge = {
        1: _scores(4, 3, 0, 2, 4),
        2: _scores(1, 2, 1, 2, 2),
        3: _scores(1, 1, 2, 2, 1),
        4: _scores(3, 2, 1, 2, 1),
        5: _scores(3, 3, 1, 2, 1),
        6: _scores(2, 2, 2, 2, 0),
    }
    # Chosen first / chosen second (lower id 3) / chosen first; one pick the judge never saw.
    heatmap = preference_heatmap([(1, 2), (4, 3), (5, 6), (7, 8)], judge)
    assert heatmap.n == 3 and heatmap.labels == list(HEATMAP_LABELS)
    assert heatmap.labels[-1] == "human_preference" and heatmap.labels[0] == "d_helpfulness"
    m = heatmap.matrix
    assert len(m) == 6 and all(len(row) == 6 for row in m)
    preference = 5
    # d_helpfulness = [3, -2, 1] against y = [1, -1, 1]: 48 / sqrt(114 * 24).
    assert m[0][preference] == pytest.approx(48 / (114 * 24) ** 0.5)
    assert m[1][preference] == pytest.approx(1.0)  # d_correctness = [1, -1, 1]
    assert m[2][preference] == pytest.approx(-1.0)  # d_coherence = [-1, 1, -1]
    assert m[3][preference] is None and m[3][3] is None  # d_complexity is always 0
    assert all(m[i][j] == m[j][i] for i in range(6) for j in range(6))
    assert [m[i][i] for i in range(6)] == [1.0, 1.0, 1.0, None, 1.0, 1.0]
    assert m[0][1] == pytest.approx(pearson([3, -2, 1], [1, -1, 1]))


def test_preference_heatmap_undefined_cases():
    judge = {1: _scores(4, 4, 4, 4, 4), 2: _scores(0, 1, 2, 3, 4), 3: _scores(2, 2, 2, 2, 2)}
    # Always the lower id chosen: the preference is constant, so it correlates with nothing.
    same_side = preference_heatmap([(1, 2), (1, 3)], judge)
    assert all(v is None for v in same_side.matrix[5])
    empty = preference_heatmap([], judge)
    assert empty.n == 0 and all(v is None for row in empty.matrix for v in row)


# --- SVG ----------------------------------------------------------------------------------


def test_diverging_colour_scale():
    assert diverging_colour(0) == "#ffffff"
    assert diverging_colour(1) == "#b2182b" and diverging_colour(-1) == "#2166ac"
    assert diverging_colour(5) == diverging_colour(1)  # clamped
    assert diverging_colour(None) == diverging_colour(float("nan")) != "#ffffff"


def test_heatmap_svg_is_well_formed_with_36_cells_and_escaped_text():
    labels = ["<script>alert(1)</script>", "a & b", *HEATMAP_LABELS[2:]]
    matrix = [[1.0 if i == j else (i - j) / 10 for j in range(6)] for i in range(6)]
    matrix[0][1] = matrix[1][0] = None
    matrix[2][3] = -0.0001  # rounds to 0.00, not -0.00
    svg = heatmap_svg(labels, matrix, 'Judge "x" <b>')
    assert "<script" not in svg and "&lt;script&gt;" in svg
    root = _parse(svg)
    assert root.tag == f"{SVG}svg"
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]
    assert len(cells) == 36
    assert [c.get("data-value") for c in cells[:3]] == ["1.00", "—", "-0.20"]
    assert cells[2 * 6 + 3].get("data-value") == "0.00"
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "<script>alert(1)</script>" in texts and "a & b" in texts
    assert 'Judge "x" <b>' in texts
    assert {"+1", "0", "-1"} <= set(texts)  # the legend
    assert not list(root.iter(f"{SVG}script")) and "href" not in svg.replace("url(#", "")


def test_unit_bars_svg_scales_and_shows_undefined_values():
    svg = unit_bars_svg(["helpfulness", "<i>x</i>", "coherence"], [0.5, None, 1.0], "alpha")
    root = _parse(svg)
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(bars) == 2
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert {"0.50", "—", "1.00", "<i>x</i>"} <= set(texts)
    assert "-1" not in texts  # all non-negative: 0..1
    assert float(bars[1].get("width")) == pytest.approx(2 * float(bars[0].get("width")))
    negative = _parse(unit_bars_svg(["a", "b"], [-0.5, 0.5], "r"))
    ticks = ["".join(t.itertext()) for t in negative.iter(f"{SVG}text")]
    assert "-1" in ticks  # some value below zero: -1..1
    widths = [float(r.get("width")) for r in negative.iter(f"{SVG}rect")]
    assert widths[0] == pytest.approx(widths[1])


def test_analytics_report_puts_it_together():
    human = {
        1: {"ann": _scores(4, 4, 4, 2, 1), "bob": _scores(4, 3, 4, 2, 1)},
        2: {"ann": _scores(0, 0, 0, 2, 3), "bob": _scores(0, 1, 0, 2, 3)},
        3: {"ann": _scores(2, 2, 2, 2, 2)},
    }
    judges = {"<evil>": {1: _all(4), 2: _all(0), 3: _all(2)}}
    report = analytics_report(human, judges, [(1, 2), (2, 3)])
    assert (report.rated_completions, report.units, report.annotators) == (3, 2, 2)
    alphas = {a.attribute: a for a in report.alphas}
    assert alphas["helpfulness"].interval == pytest.approx(1.0)
    assert alphas["complexity"].interval is None
    assert alphas["correctness"].interval == pytest.approx(
        krippendorff_alpha({1: {"a": 4, "b": 3}, 2: {"a": 0, "b": 1}})
    )
    (judge,) = report.judges
    assert judge.completions == 3 and judge.picks.n == 2 and judge.picks.agree == 1
    assert judge.heatmap.n == 2
    for svg in (report.alpha_svg, judge.correlation_svg, judge.heatmap_svg):
        _parse(svg)
    assert "<evil>" not in judge.heatmap_svg and "&lt;evil&gt;" in judge.heatmap_svg
    empty = analytics_report({}, {}, [])
    assert empty.units == 0 and empty.judges == [] and all(a.interval is None for a in empty.alphas)


def test_analytics_imports_without_django():
    code = "import sys, annotation.core.analytics; print('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --- The page -----------------------------------------------------------------------------


def _rate(completion, scores, *, user=None, judge=None, kind="annotation"):
    from annotation.models import Rating

    return Rating.objects.create(completion=completion, user=user, judge=judge, kind=kind, **scores)


def _pick(prompt, annotator, chosen=None, rejected=None):
    from annotation.models import PairPick

    return PairPick.objects.create(
        prompt=prompt, annotator=annotator, chosen=chosen, rejected=rejected, is_tie=chosen is None
    )


@pytest.fixture
def rated(make_user):
    """One prompt, three completions, two annotators, one judge, two picks and a tie."""
    from tests import factories

    ann, bob, cat = (make_user(n, role="annotator") for n in ("ann", "bob", "cat"))
    prompt = factories.prompt()
    c1, c2, c3 = (factories.completion(prompt, i) for i in range(3))
    for c, a, b in (
        (c1, _scores(4, 4, 4, 2, 1), _scores(4, 3, 4, 2, 1)),
        (c2, _scores(2, 2, 2, 2, 2), _scores(2, 2, 2, 2, 2)),
        (c3, _scores(0, 0, 1, 2, 3), _scores(0, 1, 0, 2, 3)),
    ):
        _rate(c, a, user=ann)
        _rate(c, b, user=bob)
    # A curator's resolution is not a third independent rating: alpha must ignore it.
    _rate(c1, _all(0), user=cat, kind="resolution")
    judge = factories.judge("oracle <1>")
    for c, s in ((c1, _scores(4, 4, 4, 1, 1)), (c2, _scores(1, 1, 1, 1, 3)), (c3, _all(2))):
        _rate(c, s, judge=judge)
    _pick(prompt, ann, c1, c3)  # the judge agrees (12 > 6)
    _pick(prompt, bob, c3, c1)  # the judge disagrees
    _pick(prompt, cat)  # a tie: left out
    return {"prompt": prompt, "completions": (c1, c2, c3), "judge": judge, "users": (ann, bob)}


def _body(client, **params) -> str:
    response = client.get(reverse("annotation:analytics"), params)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
@pytest.mark.db_backend
def test_the_page_shows_alpha_and_each_judge(client, curator, rated):
    client.force_login(curator)
    body = _body(client)
    correctness = krippendorff_alpha(
        {1: {"a": 4, "b": 3}, 2: {"a": 2, "b": 2}, 3: {"a": 0, "b": 1}}
    )
    assert 'data-alpha="helpfulness">1.000<' in body
    assert f'data-alpha="correctness">{correctness:.3f}<' in body
    assert 'data-alpha="complexity">—<' in body  # everyone gave 2
    assert 'data-units="3"' in body and "2 annotators rated 3 completions" in body
    assert "oracle &lt;1&gt;" in body and "oracle <1>" not in body
    assert 'data-pearson="helpfulness">' in body
    assert 'data-pick-agreement="0.5"' in body and "1 of 2</strong>" in body
    assert "over n = 2 picks" in body
    svgs = body.count("<svg ")
    assert svgs == 3  # the alpha bars, the judge's correlation bars, its heatmap
    heatmap = body[body.index('<div class="chart-box heatmap">') :]
    heatmap = heatmap[heatmap.index("<svg") : heatmap.index("</svg>") + len("</svg>")]
    root = _parse(heatmap)
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]) == 36


@pytest.mark.django_db
@pytest.mark.db_backend
def test_the_page_says_when_there_is_nothing_yet(client, staff_user):
    client.force_login(staff_user)
    body = _body(client)
    assert "No human ratings yet." in body and "No judge ratings yet." in body
    assert "<svg" not in body


@pytest.mark.django_db
@pytest.mark.db_backend
def test_a_judge_without_overlap_gets_empty_states(client, curator):
    from tests import factories

    _rate(factories.completion(), _all(3), judge=factories.judge("lonely"))
    client.force_login(curator)
    body = _body(client)
    assert "No human ratings yet." in body
    assert "Judge lonely against annotators" in body
    assert "No completion rated by both this judge and an annotator yet." in body
    assert "No human pair pick on completions this judge rated yet." in body


@pytest.mark.django_db
@pytest.mark.db_backend
def test_source_and_campaign_filters_narrow_the_data(client, curator, rated):
    from annotation.models import Campaign, CampaignItem
    from tests import factories

    ann, bob = rated["users"]
    other = factories.prompt(factories.source("elsewhere"))
    for i in range(2):
        c = factories.completion(other, i)
        _rate(c, _all(i), user=ann)
        _rate(c, _all(4 - i), user=bob)
    campaign = Campaign.objects.create(name="first batch")
    CampaignItem.objects.create(campaign=campaign, prompt=rated["prompt"])
    client.force_login(curator)
    assert 'data-units="5"' in _body(client)
    assert 'data-units="3"' in _body(client, campaign=campaign.pk)
    assert 'data-units="2"' in _body(client, source=other.source_id)
    assert "No human ratings yet." in _body(client, campaign=campaign.pk, source=other.source_id)
    assert 'data-units="5"' in _body(client, campaign="nonsense", source="999999")


@pytest.mark.django_db
@pytest.mark.db_backend
def test_page_queries_do_not_grow_with_rows(client, curator, rated, make_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests import factories

    client.force_login(curator)
    _body(client)  # warm up anything cached once per process

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            _body(client)
        return len(queries)

    small = count()
    people = [*rated["users"], make_user("dan", role="annotator")]
    judges = [rated["judge"], factories.judge("second")]
    rng = random.Random(1)
    for _ in range(6):
        prompt = factories.prompt()
        completions = [factories.completion(prompt, i) for i in range(4)]
        for c in completions:
            for rater in people:
                _rate(c, _scores(*(rng.randint(0, 4) for _ in ATTRIBUTES)), user=rater)
            for judge in judges:
                _rate(c, _scores(*(rng.randint(0, 4) for _ in ATTRIBUTES)), judge=judge)
        for person in people:
            chosen, rejected = rng.sample(completions, 2)
            _pick(prompt, person, chosen, rejected)
    large = count()
    assert small == large <= 12
    assert _body(client).count("<svg ") == 5  # two judges now


@pytest.mark.django_db
@pytest.mark.db_backend
def test_only_curators_and_staff_see_the_page(client, annotator, outsider, staff_user, curator):
    url = reverse("annotation:analytics")
    assert client.get(url).url.startswith(reverse("login"))  # anonymous: log in first
    for user, status in ((annotator, 403), (outsider, 403), (curator, 200), (staff_user, 200)):
        client.force_login(user)
        assert client.get(url).status_code == status, user.username


@pytest.mark.django_db
@pytest.mark.db_backend
def test_selectors_read_annotations_judges_and_picks(rated):
    from annotation import analytics_selectors as selectors

    c1, c2, c3 = (c.pk for c in rated["completions"])
    ann, bob = (u.pk for u in rated["users"])
    scope = selectors.Scope()
    human = selectors.human_scores(scope)
    assert set(human) == {c1, c2, c3} and set(human[c1]) == {ann, bob}  # no resolution
    assert human[c1][bob] == _scores(4, 3, 4, 2, 1)
    judge = rated["judge"]
    assert selectors.judges_with_ratings(scope) == [(judge.pk, judge.name)]
    assert selectors.judge_scores(scope)[judge.pk][c2] == _scores(1, 1, 1, 1, 3)
    assert selectors.human_picks(scope) == [(c1, c3), (c3, c1)]  # the tie left out
    elsewhere = selectors.Scope(source_id=rated["prompt"].source_id + 1000)
    assert selectors.human_scores(elsewhere) == {} and selectors.human_picks(elsewhere) == []
