"""Ratings in: a person's, through their assignment exactly as the annotation page submits
it; a judge's answer, validated as the judge runner validates every answer."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Router
from ninja.pagination import PageNumberPagination, paginate

from annotation import selectors
from annotation.core.submission import SubmissionInvalid
from annotation.forms import CampaignForm
from annotation.models import Assignment, Campaign, Completion, JudgeConfig
from annotation.services import campaigns, judging
from annotation.services.outside import PushRejected, judge_ratings_push
from api.auth import ANNOTATORS, CURATORS, STAFF
from api.errors import bad_request
from api.formbody import form_from_body, form_schema
from api.schemas import (
    AssignmentOut,
    CampaignOut,
    JudgeOut,
    JudgeRatingsIn,
    JudgeRatingsOut,
    SubmissionIn,
    SubmissionOut,
)

router = Router(tags=["ratings"])


@router.get("/campaigns", response=list[CampaignOut], auth=ANNOTATORS, url_name="campaigns")
@paginate(PageNumberPagination, page_size=50)
def campaign_list(request):
    """Active campaigns, with how many items this user has done and has open."""
    return selectors.campaigns_for(request.auth)


CampaignIn = form_schema(CampaignForm, "CampaignIn")


@router.post("/campaigns", response={201: CampaignOut}, auth=CURATORS, url_name="campaign_new")
def campaign_new(request, body: CampaignIn):  # type: ignore[valid-type]
    """A campaign over the selected prompts' completions: the New campaign page's fields."""
    form = form_from_body(CampaignForm, body)
    try:
        with transaction.atomic():
            campaign = campaigns.campaign_create(**form.service_kwargs(), user=request.auth)
    except ValueError as exc:
        raise bad_request([((), str(exc))]) from None
    return campaign


@router.post(
    "/campaigns/{int:campaign_id}/next",
    response={200: AssignmentOut, 204: None},
    auth=ANNOTATORS,
    url_name="campaign_next",
)
def campaign_next(request, campaign_id: int):
    """This user's open item of the campaign, or the next one assigned to them (as the
    page's "next"); 204 when nothing is left for them."""
    campaign = get_object_or_404(Campaign, pk=campaign_id, is_active=True)
    assignment = campaigns.assignment_next(campaign=campaign, user=request.auth)
    if assignment is None:
        return HttpResponse(status=204)
    return _assignment_out(assignment)


@router.get(
    "/assignments/{int:assignment_id}",
    response=AssignmentOut,
    auth=ANNOTATORS,
    url_name="assignment",
)
def assignment_detail(request, assignment_id: int):
    return _assignment_out(selectors.access_assignment(request.auth, assignment_id))


def _assignment_out(assignment: Assignment) -> dict:
    item = assignment.item
    by_id = Completion.objects.in_bulk(item.completion_ids)
    return {
        "id": assignment.pk,
        "campaign_id": item.campaign_id,
        "status": assignment.status,
        "expires_at": assignment.expires_at,
        "prompt": item.prompt,
        "completions": [
            {"id": cid, "text": by_id[cid].text} for cid in item.completion_ids if cid in by_id
        ],
        "submit_url": reverse("api:assignment_submit", args=[assignment.pk]),
    }


@router.post(
    "/assignments/{int:assignment_id}/submission",
    response={200: SubmissionOut, 409: dict, 429: dict},
    auth=ANNOTATORS,
    url_name="assignment_submit",
)
def assignment_submit(request, assignment_id: int, body: SubmissionIn):
    """Scores for every completion of the item and the best and worst (or a tie): the
    annotation page's submission, through the same service and validator."""
    assignment = selectors.access_assignment(request.auth, assignment_id)
    try:
        outcome = campaigns.assignment_submit(
            assignment=assignment, user=request.auth, payload=body.model_dump()
        )
    except SubmissionInvalid as exc:
        raise bad_request(zip(exc.locs, exc.errors, strict=True)) from None
    except campaigns.AssignmentClosed as exc:
        return JsonResponse({"detail": str(exc)}, status=409)
    except campaigns.RateLimited as exc:
        return JsonResponse({"detail": str(exc)}, status=429)
    return {
        "assignment_id": assignment.pk,
        "replayed": outcome.replayed,
        "next_url": reverse("api:campaign_next", args=[assignment.item.campaign_id]),
    }


def _judge(body: JudgeRatingsIn) -> JudgeConfig:
    """By id, by name, or named as on the Judge page: looked up, or made once its name is
    valid (it ran elsewhere: no API key or local folder is needed on this server)."""
    found = JudgeConfig.objects.filter(name=body.judge).first()
    if found is None and body.judge.isdigit():
        found = JudgeConfig.objects.filter(pk=int(body.judge)).first()
    if found is not None:
        return found
    try:
        return judging.judge_config_from_spec(
            body.judge,
            prompt_version=body.prompt_version,
            temperature=body.temperature,
            callable_here=False,
        )
    except ValueError as exc:
        raise PushRejected([(("judge",), str(exc))]) from None


@router.get("/judges", response=list[JudgeOut], auth=STAFF, url_name="judges")
@paginate(PageNumberPagination, page_size=50)
def judge_list(request):
    """The judge configurations, as on the Judges page."""
    return JudgeConfig.objects.order_by("name")


@router.post(
    "/judge-ratings", response={201: JudgeRatingsOut}, auth=STAFF, url_name="judge_ratings"
)
def judge_ratings(request, body: JudgeRatingsIn):
    """A judge's answer on K completions of one prompt, run outside the studio: validated as
    the judge runner validates every answer, stored as that judge's ratings."""
    try:
        # One transaction: a refused answer leaves no judge configuration made for it.
        with transaction.atomic():
            judge = _judge(body)
            pushed = judge_ratings_push(
                judge=judge, completion_ids=body.completion_ids, answer=body.answer
            )
    except PushRejected as exc:
        raise bad_request(exc.errors) from None
    return {"rating_ids": [r.pk for r in pushed.ratings], "kept": pushed.kept}
