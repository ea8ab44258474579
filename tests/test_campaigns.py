"""Campaigns: assignment within the overlap, safe idempotent submissions, review."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from annotation.core.submission import SubmissionInvalid
from annotation.models import ATTRIBUTES, Assignment, CampaignItem, Completion, PairPick, Rating
from annotation.services import campaigns
from training.models import Checkpoint

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


@pytest.fixture
def campaign(shapes_source):
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=checkpoint, text=f"answer {i}", sample_index=i)
        for p in shapes_source.prompts.all()
        for i in range(3)
    )
    return campaigns.campaign_create(
        name="shapes round 1", selection={"source_id": shapes_source.pk}, overlap=2
    )


def payload(item: CampaignItem, *, score: int = 3, token: str | None = None, **extra) -> dict:
    ids = item.completion_ids
    return {
        "scores": {str(c): dict.fromkeys(ATTRIBUTES, score) for c in ids},
        "best": ids[0],
        "worst": ids[-1],
        "comment": "",
        "token": token or uuid.uuid4().hex,
        **extra,
    }


def test_a_campaign_freezes_items_with_shuffled_completions(campaign):
    assert campaign.items.count() == 6
    item = campaign.items.first()
    assert sorted(item.completion_ids) == sorted(
        Completion.objects.filter(prompt=item.prompt).values_list("id", flat=True)
    )


def test_next_gives_each_annotator_distinct_items_within_the_overlap(campaign, make_user):
    users = [make_user(f"a{i}", role="annotator") for i in range(3)]
    taken = []
    for user in users:
        for _ in range(6):
            assignment = campaigns.assignment_next(campaign=campaign, user=user)
            if assignment is None:
                break
            taken.append((user.pk, assignment.item_id))
            campaigns.assignment_submit(
                assignment=assignment, user=user, payload=payload(assignment.item)
            )
    per_item = {}
    for _, item_id in taken:
        per_item[item_id] = per_item.get(item_id, 0) + 1
    assert set(per_item.values()) == {2} and len(per_item) == 6  # 12 = 6 items x overlap 2
    assert len(set(taken)) == len(taken)  # nobody got an item twice
    assert campaigns.assignment_next(campaign=campaign, user=users[2]) is None


def test_an_open_assignment_is_given_back_not_a_new_one(campaign, annotator):
    first = campaigns.assignment_next(campaign=campaign, user=annotator)
    assert campaigns.assignment_next(campaign=campaign, user=annotator) == first


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_never_exceed_the_overlap(campaign, make_user):
    users = [make_user(f"t{i}", role="annotator") for i in range(8)]
    errors = []

    def grab(user):
        try:
            for _ in range(3):
                assignment = campaigns.assignment_next(campaign=campaign, user=user)
                if assignment:
                    Assignment.objects.filter(pk=assignment.pk).update(
                        status=Assignment.Status.SUBMITTED
                    )
        except Exception as exc:  # collected and shown below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=grab, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for item in CampaignItem.objects.filter(campaign=campaign):
        holders = Assignment.objects.filter(item=item, status__in=Assignment.HOLDS_SLOT).count()
        assert holders <= 2 and item.n_active == holders


def test_submit_is_validated_idempotent_and_editable(campaign, annotator):
    assignment = campaigns.assignment_next(campaign=campaign, user=annotator)
    item = assignment.item
    bad = payload(item)
    bad["scores"][str(item.completion_ids[1])]["coherence"] = 5
    bad["worst"] = bad["best"]
    with pytest.raises(SubmissionInvalid) as refused:
        campaigns.assignment_submit(assignment=assignment, user=annotator, payload=bad)
    assert "response 2: coherence needs a score from 0 to 4" in refused.value.errors
    assert "the best and the worst response must differ" in refused.value.errors
    assert Rating.objects.count() == 0

    first = payload(item, score=3, token="a" * 32)
    campaigns.assignment_submit(assignment=assignment, user=annotator, payload=first)
    again = campaigns.assignment_submit(assignment=assignment, user=annotator, payload=first)
    assert again.replayed and Rating.objects.count() == 3 and PairPick.objects.count() == 1
    item.refresh_from_db()
    assert item.n_submitted == 1

    edit = payload(item, score=1, tie=True)
    campaigns.assignment_submit(assignment=assignment, user=annotator, payload=edit)
    assert set(Rating.objects.values_list("helpfulness", flat=True)) == {1}
    assert PairPick.objects.get().is_tie and Rating.objects.count() == 3
    item.refresh_from_db()
    assert item.n_submitted == 1


def test_skip_and_flag_free_the_slot_and_are_tracked(campaign, annotator, make_user):
    first = campaigns.assignment_next(campaign=campaign, user=annotator)
    campaigns.assignment_release(assignment=first, user=annotator)
    second = campaigns.assignment_next(campaign=campaign, user=annotator)
    assert second.item_id != first.item_id
    campaigns.assignment_release(assignment=second, user=annotator, flag_reason="blurry image")
    statuses = dict(Assignment.objects.values_list("item_id", "status"))
    assert statuses == {first.item_id: "skipped", second.item_id: "flagged"}
    assert CampaignItem.objects.get(pk=first.item_id).n_active == 0
    assert Assignment.objects.get(pk=second.pk).flag_reason == "blurry image"


def test_abandoned_assignments_expire_back_to_the_queue(campaign, make_user):
    campaign.overlap = 1
    campaign.save()
    slow, other = make_user("slow", role="annotator"), make_user("other", role="annotator")
    mine = [campaigns.assignment_next(campaign=campaign, user=slow)]
    Assignment.objects.filter(pk=mine[0].pk).update(expires_at=timezone.now() - timedelta(1))
    taken = set()
    for _ in range(10):
        a = campaigns.assignment_next(campaign=campaign, user=other)
        if a is None:
            break
        campaigns.assignment_submit(assignment=a, user=other, payload=payload(a.item))
        taken.add(a.item_id)
    assert mine[0].item_id in taken  # the expired item went to someone else
    late = Assignment.objects.get(pk=mine[0].pk)
    assert late.status == Assignment.Status.EXPIRED
    with pytest.raises(campaigns.AssignmentClosed, match="other annotators have filled it"):
        campaigns.assignment_submit(assignment=late, user=slow, payload=payload(late.item))


def test_submissions_are_rate_limited(campaign, annotator, settings):
    settings.ANNOTATION_MAX_SUBMITS_PER_MINUTE = 2
    for _ in range(2):
        a = campaigns.assignment_next(campaign=campaign, user=annotator)
        campaigns.assignment_submit(assignment=a, user=annotator, payload=payload(a.item))
    a = campaigns.assignment_next(campaign=campaign, user=annotator)
    with pytest.raises(campaigns.RateLimited):
        campaigns.assignment_submit(assignment=a, user=annotator, payload=payload(a.item))


def test_the_submit_endpoint_speaks_json(client, campaign, annotator):
    client.force_login(annotator)
    response = client.get(reverse("annotation:next", args=[campaign.pk]))
    assignment = Assignment.objects.get()
    assert response["Location"] == reverse("annotation:item", args=[assignment.pk])
    url = reverse("annotation:submit", args=[assignment.pk])
    ok = client.post(url, json.dumps(payload(assignment.item)), content_type="application/json")
    assert ok.status_code == 200 and ok.json()["next"].endswith("/next/")
    bad = client.post(url, "{not json", content_type="application/json")
    assert bad.status_code == 400 and bad.json()["errors"] == ["the request is not JSON"]


def test_annotators_see_only_their_own_items(client, campaign, annotator, make_user):
    other = make_user("bob", role="annotator")
    assignment = campaigns.assignment_next(campaign=campaign, user=other)
    client.force_login(annotator)
    assert client.get(reverse("annotation:item", args=[assignment.pk])).status_code == 404
    url = reverse("annotation:submit", args=[assignment.pk])
    body = json.dumps(payload(assignment.item))
    assert client.post(url, body, content_type="application/json").status_code == 404
    assert client.get(reverse("annotation:review", args=[campaign.pk])).status_code == 403
    assert client.get(reverse("annotation:campaign_new")).status_code == 403
    assert client.get("/admin/").status_code == 404
    assert Rating.objects.count() == 0


def test_csrf_is_required_for_submissions(campaign, annotator):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(annotator)
    assignment = campaigns.assignment_next(campaign=campaign, user=annotator)
    url = reverse("annotation:submit", args=[assignment.pk])
    response = strict.post(
        url, json.dumps(payload(assignment.item)), content_type="application/json"
    )
    assert response.status_code == 403 and Rating.objects.count() == 0


def test_review_shows_every_rater_and_records_a_resolution(client, campaign, curator, make_user):
    item = campaign.items.first()
    for name, score in (("r1", 4), ("r2", 1)):
        user = make_user(name, role="annotator")
        a = Assignment.objects.create(item=item, annotator=user, expires_at=timezone.now())
        campaigns.assignment_submit(assignment=a, user=user, payload=payload(item, score=score))
    from annotation.models import JudgeConfig, RewardScore

    rm = JudgeConfig.objects.create(name="reward:rm", provider="reward", model="rm")
    RewardScore.objects.create(completion_id=item.completion_ids[0], judge=rm, reward=-1.25)
    client.force_login(curator)
    page = client.get(reverse("annotation:review_item", args=[item.pk])).content.decode()
    assert "user:r1" in page and "user:r2" in page and 'class="disagree"' in page
    assert "reward by reward:rm: <strong>-1.250</strong>" in page  # beside the ratings
    form = {f"score-{c}-{a}": "2" for c in item.completion_ids for a in ATTRIBUTES}
    client.post(reverse("annotation:review_item", args=[item.pk]), {**form, "comment": "split"})
    resolved = Rating.objects.filter(kind=Rating.Kind.RESOLUTION)
    assert resolved.count() == 3 and {r.user for r in resolved} == {curator}
    assert Rating.objects.filter(kind=Rating.Kind.ANNOTATION).count() == 6
    listing = client.get(reverse("annotation:review", args=[campaign.pk])).content.decode()
    assert 'class="disagree"' in listing


def test_a_completion_with_markup_renders_as_text(client, campaign, annotator):
    item = campaign.items.first()
    Completion.objects.filter(pk=item.completion_ids[0]).update(
        text="<script>alert(1)</script> <img src=x onerror=alert(2)> **fine**"
    )
    a = Assignment.objects.create(item=item, annotator=annotator, expires_at=timezone.now())
    client.force_login(annotator)
    page = client.get(reverse("annotation:item", args=[a.pk])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "<img src=x" not in page and "<strong>fine</strong>" in page


def test_a_campaign_keeps_its_item_count_for_the_pages(campaign, client, annotator):
    from importlib import import_module

    from django.apps import apps

    from annotation.models import Campaign

    assert campaign.item_count == campaign.items.count() == 6
    client.force_login(annotator)
    assert "6 items" in client.get(reverse("annotation:campaigns")).content.decode()
    # Campaigns made before the field get their count from the migration.
    Campaign.objects.filter(pk=campaign.pk).update(item_count=0)
    import_module("annotation.migrations.0011_campaign_item_count").count_items(apps, None)
    assert Campaign.objects.get(pk=campaign.pk).item_count == 6
