"""Agreement pages: two raters side by side, and the analytics of people against people
and each judge against people."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation import analytics_selectors as selectors
from annotation.core.agreement import agreement
from annotation.core.analytics import analytics_report
from annotation.selectors import rater_choices, rater_scores
from config.access import curator_required


def _choice(raw: str | None, choices: list[tuple[int, str]]) -> int | None:
    """The id from a GET parameter if it names one of the choices; anything else: no filter."""
    return next((pk for pk, _ in choices if str(pk) == raw), None)


@curator_required
def analytics_page(request: HttpRequest) -> HttpResponse:
    campaigns, sources = selectors.scope_choices()
    scope = selectors.Scope(
        campaign_id=_choice(request.GET.get("campaign"), campaigns),
        source_id=_choice(request.GET.get("source"), sources),
    )
    judge_scores = selectors.judge_scores(scope)
    judges = {name: judge_scores.get(pk, {}) for pk, name in selectors.judges_with_ratings(scope)}
    report = analytics_report(selectors.human_scores(scope), judges, selectors.human_picks(scope))
    context = {"report": report, "scope": scope, "campaigns": campaigns, "sources": sources}
    # The template embeds the report's SVGs with |safe: the SVG builders in
    # common.charts escape every piece of text they write (judge names included).
    return render(request, "annotation/analytics.html", context)


@curator_required
def agreement_page(request):
    choices = rater_choices()
    valid = {key for key, _ in choices}
    a, b = request.GET.get("a", ""), request.GET.get("b", "")
    result = None
    if a in valid and b in valid:
        scores_a, prompts = rater_scores(a)
        scores_b, prompts_b = rater_scores(b)
        result = agreement(scores_a, scores_b, {**prompts, **prompts_b})
    context = {"choices": choices, "a": a, "b": b, "result": result}
    return render(request, "annotation/agreement.html", context)
