from __future__ import annotations

from django.shortcuts import render

from annotation import selectors
from annotation.agreement import agreement
from config.access import curator_required


@curator_required
def agreement_page(request):
    choices = selectors.rater_choices()
    valid = {key for key, _ in choices}
    a, b = request.GET.get("a", ""), request.GET.get("b", "")
    result = None
    if a in valid and b in valid:
        scores_a, prompts = selectors.rater_scores(a)
        scores_b, prompts_b = selectors.rater_scores(b)
        result = agreement(scores_a, scores_b, {**prompts, **prompts_b})
    context = {"choices": choices, "a": a, "b": b, "result": result}
    return render(request, "annotation/agreement.html", context)
