"""Importing from the browser side: an upload becomes a job that reports row by row."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from datasets_app.models import Prompt
from datasets_app.services.imports import prompts_import_job_run
from tests.conftest import png_bytes
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


def _jsonl_with_inline_images(*, bad: bool = False) -> bytes:
    import base64

    rows = [
        {"image": {"bytes": base64.b64encode(png_bytes(colour=c)).decode()}, "question": c}
        for c in ("red", "green")
    ]
    if bad:
        rows.append({"image": {"bytes": "bm90IGFuIGltYWdl"}, "question": "broken"})
    return "\n".join(json.dumps(r) for r in rows).encode()


def _post(client, data: bytes, name: str, **fields):
    upload = SimpleUploadedFile(name, data)
    return client.post(
        reverse("datasets_app:import"),
        {"file": upload, "source": "uploaded", "format": "prompts", **fields},
    )


def test_upload_queues_a_job_that_imports(client, curator, django_capture_on_commit_callbacks):
    client.force_login(curator)
    with django_capture_on_commit_callbacks() as callbacks:
        response = _post(client, _jsonl_with_inline_images(), "p.jsonl")
    job = Job.objects.get()
    assert response["Location"] == reverse("workers:job", args=[job.pk])
    assert len(callbacks) == 1 and job.kind == Job.Kind.IMPORT
    prompts_import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert (job.metrics["created"], job.metrics["rows_total"]) == (2, 2)
    assert Prompt.objects.count() == 2


def test_bad_upload_fails_the_job_with_the_rows_and_imports_nothing(client, curator):
    client.force_login(curator)
    _post(client, _jsonl_with_inline_images(bad=True), "p.jsonl")
    job = Job.objects.get()
    prompts_import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "nothing was imported" in job.error
    assert job.metrics["rejected"][0]["row"] == 3
    assert Prompt.objects.count() == 0
    page = client.get(reverse("workers:job", args=[job.pk])).content.decode()
    assert "Rejected rows" in page and "not an image" in page


def test_zip_of_images_with_manifest_imports(client, curator):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("set/imgs/a.png", png_bytes(colour="blue"))
        zf.writestr("set/manifest.jsonl", json.dumps({"image": "imgs/a.png", "question": "Q"}))
    client.force_login(curator)
    _post(client, buffer.getvalue(), "set.zip")
    prompts_import_job_run(job_id=Job.objects.get().pk)
    assert Prompt.objects.get().question == "Q"


def test_zip_that_escapes_its_folder_is_refused(client, curator):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../evil.png", png_bytes())
    client.force_login(curator)
    _post(client, buffer.getvalue(), "evil.zip")
    job = Job.objects.get()
    prompts_import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "outside the archive" in job.error


def test_wrong_file_type_is_refused_by_the_form(client, curator):
    client.force_login(curator)
    response = _post(client, b"hello", "notes.txt")
    assert response.status_code == 200 and "Upload one of" in response.content.decode()
    assert Job.objects.count() == 0


def test_annotators_cannot_import(client, annotator):
    client.force_login(annotator)
    assert _post(client, b"x", "p.jsonl").status_code == 403
    assert Job.objects.count() == 0


def test_a_job_page_is_for_its_creator_and_staff_only(client, curator, make_user, staff_user):
    client.force_login(curator)
    _post(client, _jsonl_with_inline_images(), "p.jsonl")
    url = reverse("workers:job", args=[Job.objects.get().pk])
    assert client.get(url).status_code == 200
    client.force_login(make_user("other", role="curator"))
    assert client.get(url).status_code == 403
    client.force_login(staff_user)
    assert client.get(url).status_code == 200


def test_a_rejected_upload_names_the_forms_option_not_a_command_flag(client, curator):
    client.force_login(curator)
    _post(client, _jsonl_with_inline_images(bad=True), "p.jsonl")
    job = Job.objects.get()
    prompts_import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "--skip-bad" not in job.error
    assert "tick “Skip bad rows” on the import page to import only the valid rows" in job.error
    form = client.get(reverse("datasets_app:import")).content.decode()
    assert "Skip bad rows" in form  # the option the message names is on the page


def test_skip_bad_with_no_valid_row_fails_the_job_and_creates_no_source(client, curator):
    from datasets_app.models import Source

    client.force_login(curator)
    data = json.dumps({"image": {"bytes": "bm90IGFuIGltYWdl"}, "question": "broken"}).encode()
    _post(client, data, "p.jsonl", skip_bad="on")
    job = Job.objects.get()
    prompts_import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "none of the 1 rows is valid" in job.error
    assert not Source.objects.exists() and not Prompt.objects.exists()


def test_a_binary_upload_says_which_row_is_not_text(client, curator):
    client.force_login(curator)
    _post(client, png_bytes(), "photo.jsonl")
    job = Job.objects.get()
    prompts_import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "row 1: not UTF-8 text" in job.error and "codec" not in job.error
