"""The database itself refuses impossible rows, whatever code writes them."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from annotation.models import ATTRIBUTES, PairPick, Rating
from tests import factories
from training.models import Checkpoint
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]

SCORES = dict.fromkeys(ATTRIBUTES, 2)


def _refused(**fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(**fields)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
@pytest.mark.parametrize("value", [-1, 5])
def test_scores_outside_0_4_are_refused(attribute, value):
    judge = factories.judge()
    comp = factories.completion()
    _refused(completion=comp, judge=judge, **{**SCORES, attribute: value})
    assert Rating.objects.count() == 0


def test_a_rating_has_exactly_one_rater(make_user):
    comp = factories.completion()
    _refused(completion=comp, **SCORES)
    _refused(completion=comp, user=make_user("u1"), judge=factories.judge(), **SCORES)


def test_one_rating_per_rater_per_completion(make_user):
    comp, judge, user = factories.completion(), factories.judge(), make_user("u2")
    Rating.objects.create(completion=comp, judge=judge, **SCORES)
    Rating.objects.create(completion=comp, user=user, **SCORES)
    _refused(completion=comp, judge=judge, **SCORES)
    _refused(completion=comp, user=user, **SCORES)
    assert Rating.objects.count() == 2


def test_pair_pick_is_a_tie_or_two_distinct_completions(make_user):
    prompt = factories.prompt()
    a, b = factories.completion(prompt, 0), factories.completion(prompt, 1)
    user = make_user("picker")
    for bad in (
        {"chosen": a, "rejected": a},
        {"chosen": a, "rejected": None},
        {"chosen": a, "rejected": b, "is_tie": True},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            PairPick.objects.create(prompt=prompt, annotator=user, **bad)
    PairPick.objects.create(prompt=prompt, annotator=user, chosen=a, rejected=b)
    with pytest.raises(IntegrityError), transaction.atomic():
        PairPick.objects.create(prompt=prompt, annotator=user, is_tie=True)


def test_trained_checkpoint_needs_a_parent():
    with pytest.raises(IntegrityError), transaction.atomic():
        Checkpoint.objects.create(name="orphan", kind="trained", model_path="x")
    base = factories.checkpoint()
    Checkpoint.objects.create(name="child", kind="trained", model_path="x", parent=base)


def test_job_progress_cannot_exceed_total():
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(kind="selftest", progress_done=3, progress_total=2)


def test_duplicate_completion_sample_is_refused():
    comp = factories.completion()
    with pytest.raises(IntegrityError), transaction.atomic():
        type(comp).objects.create(
            prompt=comp.prompt, checkpoint=comp.checkpoint, text="again", sample_index=0
        )
