"""Agreement between raters: the statistics, and the page that shows them."""

from __future__ import annotations

import math

import pytest
from django.urls import reverse

from annotation.core.agreement import agreement, best_worst_pair, pearson, ranks, spearman
from annotation.models import ATTRIBUTES, Rating
from tests import factories


def test_pearson_and_spearman_on_known_values():
    x, y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    assert pearson(x, y) == pytest.approx(0.7745966692)
    assert spearman(x, y) == pytest.approx(0.7378647873)  # scipy.stats.spearmanr
    assert pearson(x, [-v for v in x]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and pearson([1], [1]) is None


def test_ties_share_their_average_rank():
    assert ranks([10, 20, 20, 30]) == [1.0, 2.5, 2.5, 4.0]


def test_best_worst_pair_drops_ties_and_breaks_equal_sums_by_id():
    s = lambda h, c, o: {"helpfulness": h, "correctness": c, "coherence": o}  # noqa: E731
    assert best_worst_pair({1: s(4, 4, 4), 2: s(0, 0, 0), 3: s(4, 4, 4)}) == (1, 2)
    assert best_worst_pair({1: s(2, 2, 2), 2: s(2, 2, 2)}) is None
    assert best_worst_pair({1: s(4, 4, 4)}) is None


def _scores(*values):
    return dict(zip(ATTRIBUTES, values, strict=True))


def test_agreement_counts_common_completions_and_matching_pairs():
    a = {1: _scores(4, 4, 4, 1, 1), 2: _scores(1, 1, 1, 1, 1), 3: _scores(3, 3, 3, 2, 2)}
    b = {
        1: _scores(3, 4, 4, 1, 1),
        2: _scores(0, 1, 1, 1, 1),
        3: _scores(4, 4, 4, 2, 3),
        9: _scores(0, 0, 0, 0, 0),
    }
    result = agreement(a, b, {1: 10, 2: 10, 3: 10, 9: 11})
    assert result.completions == 3
    helpfulness = result.attributes[0]
    assert helpfulness.n == 3 and helpfulness.exact == 0.0
    assert math.isclose(helpfulness.spearman, 0.5)  # ranks 3,1,2 against 2,1,3
    assert result.prompts_compared == 1 and result.pairs_agree == 0  # best 1 vs best 3
    assert result.attributes[3].pearson == pytest.approx(1.0)


@pytest.mark.django_db
def test_the_page_compares_two_judges(client, curator, annotator):
    prompt = factories.prompt()
    c1, c2 = factories.completion(prompt, 0), factories.completion(prompt, 1)
    j1, j2 = factories.judge("first"), factories.judge("second")
    for judge, s1, s2 in ((j1, 4, 1), (j2, 3, 0)):
        Rating.objects.create(completion=c1, judge=judge, **dict.fromkeys(ATTRIBUTES, s1))
        Rating.objects.create(completion=c2, judge=judge, **dict.fromkeys(ATTRIBUTES, s2))
    client.force_login(curator)
    url = reverse("annotation:agreement")
    body = client.get(url, {"a": f"judge:{j1.pk}", "b": f"judge:{j2.pk}"}).content.decode()
    assert "2 completions rated by both" in body
    assert 'data-pair-agreement="1.0"' in body and "1.000" in body
    client.force_login(annotator)
    assert client.get(url).status_code == 403
