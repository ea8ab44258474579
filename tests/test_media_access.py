"""Stored files follow the pages' access rules: prompt images, exports, import reports."""

from __future__ import annotations

import json
import urllib.request

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from annotation.models import Completion
from annotation.services import campaigns
from datasets_app.models import Prompt
from datasets_app.services.imports import ImportRejected, prompts_import
from training.models import Checkpoint

pytestmark = pytest.mark.django_db


def media(key: str) -> str:
    return reverse("media", kwargs={"path": key})


def get(client, user, key: str) -> int:
    if user is not None:
        client.force_login(user)
    return client.get(media(key)).status_code


@pytest.fixture
def export_key():
    return default_storage.save("exports/demo/v1-abc/train.parquet", ContentFile(b"PAR1"))


def test_exports_are_for_curators_and_staff(client, export_key, annotator, curator, staff_user):
    assert get(client, annotator, export_key) == 403
    assert get(client, curator, export_key) == 200
    assert get(client, staff_user, export_key) == 200


def test_anonymous_users_are_sent_to_log_in(client, export_key):
    assert client.get(media(export_key)).status_code == 302


def test_an_annotator_sees_only_the_images_of_their_assignments(
    client, shapes_source, annotator, make_user, curator
):
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    prompts = list(shapes_source.prompts.order_by("pk"))
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=checkpoint, text=f"answer {i}", sample_index=i)
        for p in prompts[:1]
        for i in range(2)
    )
    campaign = campaigns.campaign_create(
        name="one", selection={"source_id": shapes_source.pk}, overlap=1
    )
    mine, other = prompts[0].image.name, prompts[1].image.name
    assert mine != other
    assert get(client, annotator, mine) == 404  # nothing assigned yet

    assignment = campaigns.assignment_next(campaign=campaign, user=annotator)
    assert assignment.item.prompt_id == prompts[0].pk
    assert get(client, annotator, mine) == 200
    assert get(client, annotator, other) == 404
    assert get(client, make_user("bob", role="annotator"), mine) == 404
    assert get(client, curator, other) == 200


def test_import_reports_are_for_their_creator_and_staff(
    client, tmp_path, make_user, curator, staff_user
):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": ""}) + "\n")
    owner = make_user("owner", role="curator")
    with pytest.raises(ImportRejected) as raised:
        prompts_import(path=bad, source_name="bad", fmt="prompts", user=owner)
    key = raised.value.report_name
    assert key.startswith(f"import-reports/{owner.pk}/")
    assert get(client, owner, key) == 200
    assert get(client, curator, key) == 404
    assert get(client, staff_user, key) == 200


def test_a_shell_import_report_is_for_staff_only(client, tmp_path, curator, staff_user):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": ""}) + "\n")
    with pytest.raises(ImportRejected) as raised:
        prompts_import(path=bad, source_name="bad", fmt="prompts")
    assert get(client, curator, raised.value.report_name) == 404
    assert get(client, staff_user, raised.value.report_name) == 200


@pytest.mark.parametrize(
    "path", ["import-reports/", "import-reports", "exports/demo", "images/", "", "a/../b"]
)
def test_folders_and_odd_paths_are_404_never_500(client, export_key, staff_user, path):
    default_storage.save("import-reports/shell/x.json", ContentFile(b"{}"))
    client.force_login(staff_user)
    assert client.get(f"/media/{path}").status_code == 404


def test_unknown_folders_are_staff_only(client, curator, staff_user):
    key = default_storage.save("uploads/abc/file.jsonl", ContentFile(b"{}"))
    assert get(client, curator, key) == 403
    assert get(client, staff_user, key) == 200


def test_page_links_to_images_go_through_the_checked_view(client, shapes_source, curator):
    prompt = Prompt.objects.filter(source=shapes_source).first()
    client.force_login(curator)
    page = client.get(reverse("datasets_app:prompt", args=[prompt.pk])).content.decode()
    assert f'src="{media(prompt.image.name)}"' in page


# --- object storage: the real S3 SDK against moto's server on 127.0.0.1 -------------------


def test_object_storage_downloads_redirect_to_a_short_signed_url_after_the_check(
    client, s3_storage, annotator, curator
):
    storage, endpoint = s3_storage.storage, s3_storage.endpoint
    key = storage.save("exports/demo/v1-abc/train.parquet", ContentFile(b"PAR1 rows"))
    # What pages and FieldFile.url render: the checked view, never the object itself.
    assert storage.url(key) == media(key)

    client.force_login(annotator)
    assert client.get(media(key)).status_code == 403

    client.force_login(curator)
    response = client.get(media(key))
    assert response.status_code == 302
    signed = response["Location"]
    assert signed.startswith(f"{endpoint}/studio/{key}?")
    assert "X-Amz-Signature=" in signed and "X-Amz-Expires=120" in signed
    with urllib.request.urlopen(signed, timeout=10) as answer:  # noqa: S310 (127.0.0.1)
        assert answer.read() == b"PAR1 rows"
    unsigned = signed.split("?", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=10)  # noqa: S310
    assert refused.value.code == 403


def test_object_storage_missing_file_is_404(client, s3_storage, staff_user):
    client.force_login(staff_user)
    assert client.get(media("exports/none/v1/train.parquet")).status_code == 404
