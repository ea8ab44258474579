"""Names that become folders (versions, runs, sources) are safe slugs, checked by the form
as a field error and again by the service, whoever calls it."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from config.names import safe_name
from datasets_app.models import DatasetVersion, Source
from datasets_app.services import versions
from datasets_app.services.imports import prompts_import
from tests.test_versions import rated  # noqa: F401 (fixture)
from workers.models import Job

pytestmark = pytest.mark.django_db

UNSAFE = ["../x", "a/b", "../../../trav-test", "..", ".hidden", "a\\b", "white space", "-flag"]


@pytest.mark.parametrize("value", UNSAFE)
def test_the_rule_refuses_paths_and_says_what_is_allowed(value):
    with pytest.raises(ValueError, match="letters, digits"):
        safe_name(value, "dataset name")


@pytest.mark.parametrize("value", ["shapes-dpo", "v1.2_final", "A", "0"])
def test_the_rule_keeps_ordinary_names(value):
    assert safe_name(f"  {value} ") == value


@pytest.mark.parametrize("value", ["../x", "a/b"])
def test_the_version_form_gives_a_field_error_and_saves_nothing(
    client, curator, shapes_source, value
):
    client.force_login(curator)
    page = client.post(
        reverse("datasets_app:version_new"),
        {
            "name": value,
            "strategy": "rejection_sampling",
            "kinds": ["judge"],
            "combine": "mean",
            "source": shapes_source.pk,
            "seed": 0,
            "save": "1",
        },
    )
    assert page.status_code == 200
    errors = page.context["form"].errors
    assert "name" in errors and "letters, digits" in errors["name"][0]
    assert not DatasetVersion.objects.exists()


@pytest.mark.parametrize("value", ["../x", "a/b"])
def test_the_version_service_refuses_them_for_commands(shapes_source, value):
    with pytest.raises(ValueError, match="not a valid dataset name"):
        versions.dataset_version_build(
            name=value, strategy="rejection_sampling", selection={"source_id": shapes_source.pk}
        )
    with pytest.raises(CommandError, match="not a valid dataset name"):
        call_command(
            "curate", "--strategy", "rejection_sampling", "--name", value, "--source", "sqa"
        )
    assert not DatasetVersion.objects.exists()


def test_the_import_form_refuses_an_unsafe_source_name(client, curator):
    client.force_login(curator)
    line = json.dumps({"question": "what?"}).encode()
    page = client.post(
        reverse("datasets_app:import"),
        {"file": SimpleUploadedFile("p.jsonl", line), "source": "../up", "format": "prompts"},
    )
    assert page.status_code == 200 and "source" in page.context["form"].errors
    assert not Job.objects.exists() and not Source.objects.exists()


def test_the_import_service_refuses_an_unsafe_source_name(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question": "what?"}) + "\n")
    with pytest.raises(ValueError, match="not a valid source name"):
        prompts_import(path=path, source_name="a/b", fmt="prompts")
    assert not Source.objects.exists()


def test_an_old_version_whose_name_is_a_path_fails_its_export_in_one_line(rated, settings):  # noqa: F811
    from datasets_app.services import exports

    version = versions.dataset_version_build(
        name="fine", strategy="rejection_sampling", selection={"source_id": rated[0].pk}
    )
    # As rows made before names were checked may be.
    DatasetVersion.objects.filter(pk=version.pk).update(name="../../../trav-test")
    version.refresh_from_db()
    job = exports.export_enqueue(version=version)
    exports.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "not a valid dataset name" in job.error and "Traceback" not in job.error
    assert not (settings.MEDIA_ROOT.parent / "trav-test").exists()
