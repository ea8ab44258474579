"""The annotator's pages: campaigns, the item page, submit / skip / flag; curator review."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation import selectors
from annotation.core.submission import SubmissionInvalid
from annotation.forms import CampaignForm, resolution_payload
from annotation.models import Campaign, CampaignItem
from annotation.services import campaigns
from config.access import access_is_curator, annotator_required, curator_required


@annotator_required
def campaign_list(request):
    context = {
        "campaigns": selectors.campaigns_for(request.user),
        "can_manage": access_is_curator(request.user),
    }
    return render(request, "annotation/campaign_list.html", context)


@curator_required
def campaign_new(request):
    form = CampaignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            campaign = campaigns.campaign_create(**form.service_kwargs(), user=request.user)
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Campaign {campaign.name} has {campaign.item_count} items.")
            return redirect("annotation:campaigns")
    return render(request, "annotation/campaign_new.html", {"form": form})


@annotator_required
def campaign_next(request, campaign_id: int):
    campaign = get_object_or_404(Campaign, pk=campaign_id, is_active=True)
    assignment = campaigns.assignment_next(campaign=campaign, user=request.user)
    if assignment is None:
        messages.info(request, f"Nothing left for you in {campaign.name}. Thank you!")
        return redirect("annotation:campaigns")
    return redirect("annotation:item", assignment_id=assignment.pk)


@annotator_required
def item_page(request, assignment_id: int):
    assignment = selectors.access_assignment(request.user, assignment_id)
    context = selectors.item_page_context(assignment)
    return render(request, "annotation/item.html", context)


@annotator_required
@require_POST
def item_submit(request, assignment_id: int):
    assignment = selectors.access_assignment(request.user, assignment_id)
    try:
        payload = json.loads(request.body or b"{}")
        outcome = campaigns.assignment_submit(
            assignment=assignment, user=request.user, payload=payload
        )
    except (json.JSONDecodeError, UnicodeDecodeError):
        return JsonResponse({"ok": False, "errors": ["the request is not JSON"]}, status=400)
    except SubmissionInvalid as exc:
        return JsonResponse({"ok": False, "errors": exc.errors}, status=400)
    except campaigns.AssignmentClosed as exc:
        return JsonResponse({"ok": False, "errors": [str(exc)]}, status=409)
    except campaigns.RateLimited as exc:
        return JsonResponse({"ok": False, "errors": [str(exc)]}, status=429)
    next_url = reverse("annotation:next", args=[assignment.item.campaign_id])
    return JsonResponse({"ok": True, "replayed": outcome.replayed, "next": next_url})


@annotator_required
@require_POST
def item_release(request, assignment_id: int):
    assignment = selectors.access_assignment(request.user, assignment_id)
    reason = request.POST.get("reason", "").strip() if "flag" in request.POST else ""
    if "flag" in request.POST and not reason:
        reason = "flagged without a reason"
    campaigns.assignment_release(assignment=assignment, user=request.user, flag_reason=reason)
    return redirect("annotation:next", campaign_id=assignment.item.campaign_id)


@annotator_required
def campaign_undo(request, campaign_id: int):
    """Back to the last submitted item, to change it."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    last = campaigns.assignment_last_submitted(campaign=campaign, user=request.user)
    if last is None:
        messages.info(request, "Nothing submitted yet in this campaign.")
        return redirect("annotation:next", campaign_id=campaign.pk)
    return redirect("annotation:item", assignment_id=last.pk)


@curator_required
def review_list(request, campaign_id: int):
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = {"campaign": campaign, "rows": selectors.review_rows(campaign)}
    return render(request, "annotation/review_list.html", context)


@curator_required
def review_item(request, item_id: int):
    item = get_object_or_404(CampaignItem.objects.select_related("campaign", "prompt"), pk=item_id)
    if request.method == "POST":
        try:
            payload = resolution_payload(request.POST, item.completion_ids)
            campaigns.resolution_submit(item=item, curator=request.user, payload=payload)
        except SubmissionInvalid as exc:
            messages.error(request, f"Not saved: {exc}")
        else:
            messages.success(request, "Resolution saved.")
            return redirect("annotation:review_item", item_id=item.pk)
    return render(request, "annotation/review_item.html", selectors.review_context(item))
