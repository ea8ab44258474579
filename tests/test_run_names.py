"""Run names become checkpoint folders: safe slugs, and a default that never collides."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.test_training_jobs import base, roots, small_versions  # noqa: F401 (fixtures)
from training.models import TrainingJob
from training.services import trainings

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["../x", "a/b", "../../../trav-test"])
def test_an_unsafe_run_name_is_refused_by_the_service(small_versions, base, value):  # noqa: F811
    with pytest.raises(ValueError, match="not a valid run name"):
        trainings.training_launch(
            recipe="dpo",
            dataset_version=small_versions["dpo"],
            base_checkpoint=base,
            name=value,
            enqueue=False,
        )
    assert not TrainingJob.objects.exists()


def test_an_unsafe_run_name_is_a_field_error_on_the_launch_page(
    client,
    staff_user,
    small_versions,  # noqa: F811
    base,  # noqa: F811
):
    client.force_login(staff_user)
    page = client.post(
        reverse("training:training_new"),
        {
            "recipe": "dpo",
            "dataset_version": small_versions["dpo"].pk,
            "base_checkpoint": base.pk,
            "gpus": 1,
            "name": "a/b",
        },
    )
    assert page.status_code == 200
    assert "letters, digits" in page.context["form"].errors["name"][0]
    assert not TrainingJob.objects.exists()


def test_two_default_names_in_one_second_do_not_collide(small_versions, base, monkeypatch):  # noqa: F811
    from datetime import UTC, datetime

    frozen = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    monkeypatch.setattr("training.services.trainings.timezone.now", lambda: frozen)
    launched = [
        trainings.training_launch(
            recipe="dpo",
            dataset_version=small_versions["dpo"],
            base_checkpoint=base,
            overrides={"max_steps": 1},
            enqueue=False,
        )
        for _ in range(2)
    ]
    names = [t.name for t in launched]
    assert len(set(names)) == 2
    assert all(n.startswith("dpo-shapes-dpo-v1-20260101-120000-") for n in names)
