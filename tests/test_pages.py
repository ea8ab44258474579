"""Pages as each persona sees them: login everywhere, roles, thumbnails, no N+1."""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets_app.core.shapes import make_shapes
from datasets_app.services.imports import prompts_import
from workers.models import Job

pytestmark = pytest.mark.django_db

PAGES = ["home", "workers:status", "datasets_app:prompts", "admin:datasets_app_prompt_changelist"]


@pytest.fixture
def shapes_prompts(tmp_path):
    make_shapes(tmp_path, n=8, seed=1)
    prompts_import(path=tmp_path / "scienceqa.parquet", source_name="sqa", fmt="scienceqa")


@pytest.mark.parametrize("name", PAGES)
def test_every_page_requires_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and "login" in response["Location"]


def test_staff_sees_status_with_database_broker_and_queues(client, staff_user):
    client.force_login(staff_user)
    response = client.get(reverse("workers:status"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "sqlite" in body or "postgresql" in body
    for queue in ("default", "judge", "gpu"):
        assert f'value="{queue}"' in body


@pytest.mark.parametrize("persona", ["annotator", "outsider"])
def test_non_staff_cannot_see_operations_or_prompts(client, request, persona):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(reverse("workers:status")).status_code == 403
    assert client.get(reverse("datasets_app:prompts")).status_code == 403
    admin = client.get(reverse("admin:datasets_app_prompt_changelist"))
    assert admin.status_code == 404  # the admin hides from logged-in non-staff


def test_curator_browses_prompts_with_images(client, curator, shapes_prompts):
    client.force_login(curator)
    response = client.get(reverse("datasets_app:prompts"))
    body = response.content.decode()
    assert body.count('<img src="/media/images/') == 8
    from datasets_app.models import Prompt

    prompt = Prompt.objects.first()
    detail = client.get(reverse("datasets_app:prompt", args=[prompt.pk])).content.decode()
    assert prompt.question in detail and prompt.choices[prompt.answer_index] in detail


def test_prompt_list_queries_do_not_grow_with_rows(client, curator, tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(curator)
    counts = []
    for n, seed in ((3, 2), (40, 3)):
        make_shapes(tmp_path / str(n), n=n, seed=seed)
        prompts_import(
            path=tmp_path / str(n) / "scienceqa.parquet", source_name=f"s{n}", fmt="scienceqa"
        )
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("datasets_app:prompts")).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 8


def test_admin_prompt_list_shows_thumbnails_that_load(client, staff_user, shapes_prompts):
    staff_user.is_staff = True
    staff_user.save()
    client.force_login(staff_user)
    response = client.get(reverse("admin:datasets_app_prompt_changelist"))
    body = response.content.decode()
    assert body.count('alt="prompt ') == 8
    src = body.split('alt="prompt ', 1)[0].rsplit('<img src="', 1)[1].split('"', 1)[0]
    image = client.get(src)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content).startswith(b"\x89PNG")


def test_media_is_not_served_to_anonymous_users(client, shapes_prompts):
    from datasets_app.models import Prompt

    url = Prompt.objects.first().image.url
    assert client.get(url).status_code == 302


def test_staff_self_test_creates_a_job_and_shows_its_page(client, staff_user):
    client.force_login(staff_user)
    response = client.post(reverse("workers:selftest"), {"queue": "gpu"})
    job = Job.objects.get()
    assert response["Location"] == reverse("workers:job", args=[job.pk])
    assert (job.queue, job.status) == ("gpu", Job.Status.QUEUED)
    page = client.get(reverse("workers:job", args=[job.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in page  # live while it is not finished


def test_self_test_refuses_an_unknown_queue(client, staff_user):
    client.force_login(staff_user)
    response = client.post(reverse("workers:selftest"), {"queue": "nope"}, follow=True)
    assert "unknown queue" in response.content.decode()
    assert Job.objects.count() == 0


def test_status_page_needs_post_for_actions(client, staff_user):
    client.force_login(staff_user)
    assert client.get(reverse("workers:selftest")).status_code == 405
