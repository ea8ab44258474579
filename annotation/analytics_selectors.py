"""Reads for the agreement analytics page. Each is one query of plain values, however many
rows, raters or judges there are; the statistics themselves live in `annotation.core.analytics`.

A scope narrows every read to the prompts of one campaign and/or one source.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q

from annotation.models import ATTRIBUTES, Campaign, CampaignItem, JudgeConfig, PairPick, Rating
from datasets_app.models import Source


@dataclass(frozen=True)
class Scope:
    campaign_id: int | None = None
    source_id: int | None = None

    def prompts(self, prefix: str = "") -> Q:
        """A filter on the prompt reached through `prefix` ("completion__" for ratings)."""
        q = Q()
        if self.campaign_id is not None:
            # A subquery, not a join through the items, so that no row is repeated.
            items = CampaignItem.objects.filter(campaign_id=self.campaign_id)
            q &= Q(**{f"{prefix}prompt_id__in": items.values("prompt_id")})
        if self.source_id is not None:
            q &= Q(**{f"{prefix}prompt__source_id": self.source_id})
        return q


def scope_choices() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(campaigns, sources) as (id, name), for the filter form."""
    campaigns = list(Campaign.objects.order_by("name").values_list("id", "name"))
    sources = list(Source.objects.order_by("name").values_list("id", "name"))
    return campaigns, sources


def human_scores(scope: Scope) -> dict[int, dict[int, dict[str, int]]]:
    """completion id -> user id -> scores, from people's own annotations (a curator's
    resolution is a verdict, not an independent rating, so it would inflate agreement)."""
    rows = Rating.objects.filter(
        scope.prompts("completion__"), user__isnull=False, kind=Rating.Kind.ANNOTATION
    ).values_list("completion_id", "user_id", *ATTRIBUTES)
    result: dict[int, dict[int, dict[str, int]]] = {}
    for completion_id, user_id, *scores in rows:
        result.setdefault(completion_id, {})[user_id] = dict(zip(ATTRIBUTES, scores, strict=True))
    return result


def judges_with_ratings(scope: Scope) -> list[tuple[int, str]]:
    """(id, name) of each judge with at least one rating in scope, by name."""
    rated = Rating.objects.filter(scope.prompts("completion__"), judge__isnull=False)
    return list(
        JudgeConfig.objects.filter(pk__in=rated.values("judge_id"))
        .order_by("name")
        .values_list("id", "name")
    )


def judge_scores(scope: Scope) -> dict[int, dict[int, dict[str, int]]]:
    """judge id -> completion id -> scores, for every judge at once."""
    rows = Rating.objects.filter(scope.prompts("completion__"), judge__isnull=False).values_list(
        "judge_id", "completion_id", *ATTRIBUTES
    )
    result: dict[int, dict[int, dict[str, int]]] = {}
    for judge_id, completion_id, *scores in rows:
        result.setdefault(judge_id, {})[completion_id] = dict(zip(ATTRIBUTES, scores, strict=True))
    return result


def human_picks(scope: Scope) -> list[tuple[int, int]]:
    """(chosen, rejected) completion ids of every person's pick; ties say nothing about
    which completion is better, so they are left out."""
    return list(
        PairPick.objects.filter(scope.prompts(), is_tie=False, annotator__isnull=False)
        .order_by("id")
        .values_list("chosen_id", "rejected_id")
    )
