"""A failed job tells whoever may see it what went wrong in one line; the traceback (paths,
code) is for staff, folded away."""

from __future__ import annotations

import pytest
from django.urls import reverse

from workers import jobs
from workers.models import Job

pytestmark = pytest.mark.django_db


def _crashed_job(user) -> Job:
    job = jobs.job_create(kind=Job.Kind.EXPORT, title="export", created_by=user)
    with pytest.raises(OSError), jobs.job_running(job.pk):
        raise OSError("[Errno 28] No space left on device: '/srv/media/exports/x/train.parquet'")
    job.refresh_from_db()
    return job


def test_the_creator_of_a_crashed_job_sees_one_line_and_no_traceback(client, curator):
    job = _crashed_job(curator)
    client.force_login(curator)
    for name in ("workers:job", "workers:job_progress"):
        body = client.get(reverse(name, args=[job.pk])).content.decode()
        assert "OSError: [Errno 28] No space left on device" in body
        assert "Traceback" not in body and "jobs.py" not in body


def test_staff_see_the_traceback_of_a_crashed_job_folded(client, curator, staff_user):
    job = _crashed_job(curator)
    client.force_login(staff_user)
    body = client.get(reverse("workers:job", args=[job.pk])).content.decode()
    assert body.count("No space left on device") >= 2  # the line, and the traceback's end
    folded = body[body.index('<details class="error-detail">') :]
    assert "Traceback (most recent call last)" in folded.split("</details>")[0]


def test_a_failure_message_of_several_lines_is_stored_as_its_first_line():
    job = jobs.job_create(kind=Job.Kind.TRAINING, title="t")
    stderr = (
        "the training run failed (exit 1): runner stderr follows\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/training/run.py", line 10, in main\n'
        "ValueError: max_steps must be >= 1"
    )
    jobs.job_fail(job, stderr)
    job.refresh_from_db()
    assert job.error == "the training run failed (exit 1): runner stderr follows"
    assert job.error_detail == stderr


def test_a_very_long_line_is_cut_for_the_page():
    job = jobs.job_create(kind=Job.Kind.SELFTEST, title="t")
    jobs.job_fail(job, "x" * 2000)
    job.refresh_from_db()
    assert len(job.error) == jobs.ERROR_LINE_CHARS and job.error.endswith("…")
    assert job.error_detail == "x" * 2000
