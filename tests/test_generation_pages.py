"""Launching generation and reading completions, as staff and as others."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import Completion
from training.models import Checkpoint
from workers import jobs
from workers.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def source(shapes_source):
    return shapes_source


@pytest.fixture
def checkpoint():
    return Checkpoint.objects.create(name="tiny", model_path="tiny-llava")


def _form(checkpoint, source, **changes):
    data = {
        "checkpoint": checkpoint.pk,
        "source": source.pk,
        "template": "cot_thought",
        "k": 8,
        "temperature": 0.5,
        "top_p": 1.0,
        "max_new_tokens": 64,
        "seed": 0,
        "backend": "auto",
    }
    return {**data, **changes}


def test_staff_launches_a_generation_job_on_the_gpu_queue(
    client, staff_user, checkpoint, source, django_capture_on_commit_callbacks
):
    client.force_login(staff_user)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("training:generate"), _form(checkpoint, source, limit=3))
    job = Job.objects.get()
    assert response["Location"] == reverse("workers:job", args=[job.pk])
    assert len(callbacks) == 1
    assert (job.kind, job.queue, job.progress_total) == ("generation", "gpu", 3)
    assert job.params["sampling"] == {
        "k": 8,
        "temperature": 0.5,
        "top_p": 1.0,
        "max_new_tokens": 64,
        "seed": 0,
        "template": "cot_thought",
        "steer": "",
    }
    assert job.params["prompt_ids"] == sorted(job.params["prompt_ids"])


def test_the_form_refuses_greedy_with_several_samples(client, staff_user, checkpoint, source):
    client.force_login(staff_user)
    response = client.post(reverse("training:generate"), _form(checkpoint, source, temperature=0))
    assert "greedy decoding" in response.content.decode()
    assert Job.objects.count() == 0


def test_estimate_counts_prompts_times_k(client, staff_user, checkpoint, source):
    client.force_login(staff_user)
    response = client.get(reverse("training:generate_estimate"), _form(checkpoint, source, k=4))
    assert 'data-completions="24"' in response.content.decode()


@pytest.mark.parametrize("persona", ["curator", "annotator"])
def test_only_staff_launch_generation(client, request, persona, checkpoint, source):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(reverse("training:generate")).status_code == 403
    assert client.post(reverse("training:generate"), _form(checkpoint, source)).status_code == 403
    assert Job.objects.count() == 0


def test_prompt_page_groups_completions_by_checkpoint_and_escapes_them(
    client, curator, checkpoint, source
):
    prompt = source.prompts.first()
    other = Checkpoint.objects.create(name="other", model_path="x")
    Completion.objects.create(
        prompt=prompt, checkpoint=checkpoint, text="<script>alert(1)</script>"
    )
    Completion.objects.create(prompt=prompt, checkpoint=other, text="<img src=x onerror=alert(2)>")
    client.force_login(curator)
    body = client.get(reverse("datasets_app:prompt", args=[prompt.pk])).content.decode()
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)" in body
    assert "<img src=x" not in body
    assert body.index("<h3>other") < body.index("<h3>tiny")


def test_a_failed_generation_job_resumes_and_an_import_job_does_not(client, staff_user):
    client.force_login(staff_user)
    gen = jobs.job_create(kind=Job.Kind.GENERATION, queue="gpu")
    jobs.job_fail(gen, "out of memory")
    client.post(reverse("workers:job_resume", args=[gen.pk]))
    gen.refresh_from_db()
    assert gen.status == Job.Status.QUEUED and gen.error == ""
    imp = jobs.job_create(kind=Job.Kind.IMPORT)
    jobs.job_fail(imp, "bad rows")
    response = client.post(reverse("workers:job_resume", args=[imp.pk]), follow=True)
    assert "cannot be resumed" in response.content.decode()
    imp.refresh_from_db()
    assert imp.status == Job.Status.FAILED
