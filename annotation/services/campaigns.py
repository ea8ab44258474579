"""Services for human annotation: campaigns, the assignment queue, submissions, review.

The overlap is kept by a conditional UPDATE on the item's slot counter
(`n_active < overlap` -> `n_active + 1`): the database decides, so two annotators asking
at the same moment can never both take the last slot, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from annotation.core.submission import CleanSubmission, SubmissionInvalid, validate_submission
from annotation.models import (
    ATTRIBUTES,
    Assignment,
    Campaign,
    CampaignItem,
    Completion,
    JudgeConfig,
    PairPick,
    Rating,
)
from datasets_app.selectors import prompt_selection_ids

CANDIDATES_PER_TRY = 8
CLAIM_ROUNDS = 20


class AssignmentClosed(Exception):
    """The item can no longer take this submission (it expired and others filled it)."""


class RateLimited(Exception):
    """Too many submissions in the last minute."""


@dataclass
class SubmitOutcome:
    assignment: Assignment
    replayed: bool  # the same submission came again (double click, retried request)


def campaign_create(
    *,
    name: str,
    selection: dict[str, Any],
    checkpoint_ids: list[int] | None = None,
    overlap: int = 1,
    instructions: str = "",
    show_judge_suggestions: bool = False,
    suggestion_judge: JudgeConfig | None = None,
    assignment_minutes: int = 30,
    user: Any = None,
) -> Campaign:
    """A campaign over the selected prompts that have at least two completions to compare."""
    if not name.strip():
        raise ValueError("a campaign needs a name")
    if not 1 <= overlap <= 20:
        raise ValueError("overlap must be between 1 and 20 annotators per prompt")
    if show_judge_suggestions and suggestion_judge is None:
        raise ValueError("choose the judge whose scores are shown as suggestions")
    prompt_ids = prompt_selection_ids(**selection)
    completions = Completion.objects.filter(prompt_id__in=prompt_ids).order_by(
        "prompt_id", "checkpoint_id", "sample_index", "id"
    )
    if checkpoint_ids:
        completions = completions.filter(checkpoint_id__in=checkpoint_ids)
    by_prompt: dict[int, list[int]] = {}
    for prompt_id, completion_id in completions.values_list("prompt_id", "id"):
        by_prompt.setdefault(prompt_id, []).append(completion_id)
    usable = {pk: ids for pk, ids in by_prompt.items() if len(ids) >= 2}
    if not usable:
        raise ValueError("no selected prompt has two or more completions to compare")
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name.strip(),
            item_count=len(usable),
            selection={**selection, "checkpoint_ids": checkpoint_ids or []},
            overlap=overlap,
            instructions=instructions,
            show_judge_suggestions=show_judge_suggestions,
            suggestion_judge=suggestion_judge,
            assignment_minutes=assignment_minutes,
            created_by=user,
        )
        items = []
        for prompt_id in sorted(usable):
            ids = usable[prompt_id]
            # A fixed shuffle per item: no checkpoint always sits in the first column.
            random.Random(f"{campaign.pk}:{prompt_id}").shuffle(ids)  # noqa: S311
            items.append(CampaignItem(campaign=campaign, prompt_id=prompt_id, completion_ids=ids))
        CampaignItem.objects.bulk_create(items, batch_size=1000)
    return campaign


def _release_slot(item_id: int) -> None:
    CampaignItem.objects.filter(pk=item_id, n_active__gt=0).update(n_active=F("n_active") - 1)


def assignments_expire(*, campaign: Campaign | None = None) -> int:
    """Give abandoned assignments' slots back to the queue."""
    stale = Assignment.objects.filter(
        status=Assignment.Status.ASSIGNED, expires_at__lt=timezone.now()
    )
    if campaign is not None:
        stale = stale.filter(item__campaign=campaign)
    expired = 0
    for assignment_id, item_id in stale.values_list("id", "item_id")[:500]:
        with transaction.atomic():
            # Conditional: a submission that lands at this moment wins, and keeps its slot.
            if Assignment.objects.filter(
                pk=assignment_id, status=Assignment.Status.ASSIGNED
            ).update(status=Assignment.Status.EXPIRED):
                _release_slot(item_id)
                expired += 1
    return expired


def assignment_next(*, campaign: Campaign, user: Any) -> Assignment | None:
    """The annotator's open item in this campaign, or a newly assigned one; None when done."""
    if not campaign.is_active:
        return None
    mine = Assignment.objects.filter(item__campaign=campaign, annotator=user)
    current = (
        mine.filter(status=Assignment.Status.ASSIGNED, expires_at__gte=timezone.now())
        .order_by("assigned_at")
        .first()
    )
    if current is not None:
        return current
    assignments_expire(campaign=campaign)
    expires = timezone.now() + timedelta(minutes=campaign.assignment_minutes)
    # Others may take every candidate between our read and our update; look again then.
    for _ in range(CLAIM_ROUNDS):
        candidates = list(
            CampaignItem.objects.filter(campaign=campaign, n_active__lt=campaign.overlap)
            # All of the annotator's items, any campaign: the subquery then runs off the
            # annotator index instead of walking every item of the campaign.
            .exclude(pk__in=Assignment.objects.filter(annotator=user).values("item_id"))
            # Emptiest first: the annotator's own earlier items (which hold a slot) are
            # never scanned past while untouched items remain.
            .order_by("n_active", "id")
            .values_list("id", flat=True)[:CANDIDATES_PER_TRY]
        )
        if not candidates:
            return None
        # Annotators arriving together would all reach for the first free item: spread them.
        random.shuffle(candidates)
        for item_id in candidates:
            claimed = _claim(campaign, item_id, user, expires, mine)
            if claimed is not None:
                return claimed
    return None


def _claim(
    campaign: Campaign, item_id: int, user: Any, expires: Any, mine: QuerySet[Assignment]
) -> Assignment | None:
    try:
        with transaction.atomic():
            taken = CampaignItem.objects.filter(pk=item_id, n_active__lt=campaign.overlap).update(
                n_active=F("n_active") + 1
            )
            if not taken:
                return None
            return Assignment.objects.create(item_id=item_id, annotator=user, expires_at=expires)
    except IntegrityError:
        # The same annotator asked twice at once; the other request assigned it.
        return mine.filter(item_id=item_id).first()


def _check_rate(user: Any) -> None:
    limit = settings.ANNOTATION_MAX_SUBMITS_PER_MINUTE
    recent = Assignment.objects.filter(
        annotator=user, submitted_at__gte=timezone.now() - timedelta(minutes=1)
    ).count()
    if recent >= limit:
        raise RateLimited(f"more than {limit} submissions in a minute: slow down")


def _write(assignment: Assignment, user: Any, clean: CleanSubmission) -> None:
    """Insert or update the K ratings and the pick in a handful of queries, not K each."""
    item, now = assignment.item, timezone.now()
    existing = {
        r.completion_id: r
        for r in Rating.objects.filter(
            completion_id__in=list(clean.scores), user=user, kind=Rating.Kind.ANNOTATION
        )
    }
    new, changed = [], []
    for completion_id, scores in clean.scores.items():
        rating = existing.get(completion_id)
        if rating is None:
            new.append(
                Rating(
                    completion_id=completion_id,
                    user=user,
                    kind=Rating.Kind.ANNOTATION,
                    reasoning=clean.comment,
                    **scores,
                )
            )
            continue
        for attribute, value in scores.items():
            setattr(rating, attribute, value)
        rating.reasoning, rating.updated_at = clean.comment, now
        changed.append(rating)
    Rating.objects.bulk_create(new)
    if changed:
        Rating.objects.bulk_update(changed, [*ATTRIBUTES, "reasoning", "updated_at"])
    pick = {
        "chosen_id": clean.best,
        "rejected_id": clean.worst,
        "is_tie": clean.tie,
        "comment": clean.comment,
    }
    if not PairPick.objects.filter(prompt_id=item.prompt_id, annotator=user).update(
        **pick, updated_at=now
    ):
        PairPick.objects.create(prompt_id=item.prompt_id, annotator=user, **pick)


def assignment_submit(*, assignment: Assignment, user: Any, payload: dict) -> SubmitOutcome:
    """Store an item's ratings and pick; the same submission twice stores them once, and a
    later one edits them."""
    if assignment.annotator_id != user.pk:
        raise PermissionError("not your assignment")
    clean = validate_submission(payload, assignment.item.completion_ids)
    if assignment.submission_token == clean.token:
        return SubmitOutcome(assignment, replayed=True)
    _check_rate(user)
    with transaction.atomic():
        # Lock the row: two copies of one request must not both count as the first.
        locked = Assignment.objects.select_for_update().select_related("item").get(pk=assignment.pk)
        if locked.submission_token == clean.token:
            return SubmitOutcome(locked, replayed=True)
        if locked.status not in Assignment.HOLDS_SLOT:
            # Late, or changed their mind: take a slot again if the item still has one.
            retaken = CampaignItem.objects.filter(
                pk=locked.item_id, n_active__lt=locked.item.campaign.overlap
            ).update(n_active=F("n_active") + 1)
            if not retaken:
                raise AssignmentClosed(
                    "this item expired and other annotators have filled it; your answers "
                    "are still in this page"
                )
        first_time = locked.status != Assignment.Status.SUBMITTED
        _write(locked, user, clean)
        locked.status = Assignment.Status.SUBMITTED
        locked.submission_token = clean.token
        locked.submitted_at = timezone.now()
        locked.save(update_fields=["status", "submission_token", "submitted_at"])
        if first_time:
            CampaignItem.objects.filter(pk=locked.item_id).update(n_submitted=F("n_submitted") + 1)
    return SubmitOutcome(locked, replayed=False)


def assignment_release(*, assignment: Assignment, user: Any, flag_reason: str = "") -> None:
    """Skip (or flag) an open item: its slot goes back to the queue, and this annotator
    will not be given it again."""
    if assignment.annotator_id != user.pk:
        raise PermissionError("not your assignment")
    status = Assignment.Status.FLAGGED if flag_reason else Assignment.Status.SKIPPED
    with transaction.atomic():
        released = Assignment.objects.filter(
            pk=assignment.pk, status=Assignment.Status.ASSIGNED
        ).update(status=status, flag_reason=flag_reason[:2000])
        if released:
            _release_slot(assignment.item_id)


def assignment_last_submitted(*, campaign: Campaign, user: Any) -> Assignment | None:
    return (
        Assignment.objects.filter(
            item__campaign=campaign, annotator=user, status=Assignment.Status.SUBMITTED
        )
        .order_by("-submitted_at")
        .first()
    )


def resolution_submit(*, item: CampaignItem, curator: Any, payload: dict) -> None:
    """A curator's final scores for an item's completions, kept as ratings of their own kind."""
    clean = validate_submission({**payload, "tie": True}, item.completion_ids)
    with transaction.atomic():
        for completion_id, scores in clean.scores.items():
            Rating.objects.update_or_create(
                completion_id=completion_id,
                user=curator,
                kind=Rating.Kind.RESOLUTION,
                defaults={**scores, "reasoning": clean.comment},
            )


__all__ = [
    "ATTRIBUTES",
    "AssignmentClosed",
    "RateLimited",
    "SubmissionInvalid",
    "assignment_last_submitted",
    "assignment_next",
    "assignment_release",
    "assignment_submit",
    "assignments_expire",
    "campaign_create",
    "resolution_submit",
]
