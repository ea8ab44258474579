"""Object storage for several machines (issue 19.3), on the real S3 SDK against moto's
server (tests/s3_fixtures.py), with MEDIA_ROOT pointing at a folder that does not exist:
large exports go up as multipart uploads and come back byte-identical through the
access-checked view's signed redirect; import reports live in the bucket; the workers'
pieces that read images (generation, judging, the training run's data) read them through
storage, never from a local path."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image

from annotation.models import Completion
from config.storage import S3_MIN_PART_BYTES, multipart_transfer_config
from datasets_app.core.export import read_dpo_parquet
from datasets_app.models import DatasetRow, DatasetVersion, Prompt, Source
from datasets_app.services import exports
from datasets_app.services.imports import ImportRejected, prompts_import
from tests.conftest import png_bytes
from tests.s3_fixtures import BUCKET, fresh_default_storage
from training.models import Checkpoint
from workers.core.supervisor import Outcome
from workers.models import Job

pytestmark = pytest.mark.django_db
MIB = 1024 * 1024


def media(key: str) -> str:
    return reverse("media", kwargs={"path": key})


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (127.0.0.1)
        return answer.read()


def noise_png(side: int, seed: int) -> bytes:
    """An image PNG cannot compress (so that a few of them make a large parquet)."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def stored_prompts(storage, images: list[bytes]) -> list[Prompt]:
    """One prompt per image, each image only in object storage."""
    source = Source.objects.create(name="bucket", kind="prompts")
    prompts = []
    for n, data in enumerate(images):
        digest = hashlib.sha256(data).hexdigest()
        key = storage.save(f"images/{digest[:2]}/{digest}.png", ContentFile(data))
        prompts.append(
            Prompt.objects.create(
                source=source,
                image=key,
                image_sha256=digest,
                question=f"What is in picture {n}?",
                content_hash=digest,
            )
        )
    return prompts


def dpo_version(prompts: list[Prompt]) -> DatasetVersion:
    version = DatasetVersion.objects.create(
        name="bucket-pairs", kind="dpo", status="ready", strategy="best_vs_worst", checksum="c0"
    )
    DatasetRow.objects.bulk_create(
        DatasetRow(
            version=version,
            prompt=prompt,
            position=n,
            question=prompt.question,
            chosen=f"A picture {n}.",
            rejected="Nothing.",
        )
        for n, prompt in enumerate(prompts)
    )
    return version


def test_parts_come_from_the_settings_and_s3s_smallest_part_is_enforced(settings):
    settings.S3_MULTIPART_THRESHOLD = 16 * MIB
    settings.S3_MULTIPART_CHUNKSIZE = 32 * MIB
    config = multipart_transfer_config()
    assert (config.multipart_threshold, config.multipart_chunksize) == (16 * MIB, 32 * MIB)
    settings.S3_MULTIPART_CHUNKSIZE = S3_MIN_PART_BYTES - 1
    with pytest.raises(ImproperlyConfigured, match="S3_MULTIPART_CHUNKSIZE=5242879 is under"):
        multipart_transfer_config()
    settings.S3_MULTIPART_CHUNKSIZE = S3_MIN_PART_BYTES
    settings.S3_MULTIPART_THRESHOLD = 0
    with pytest.raises(ImproperlyConfigured, match="S3_MULTIPART_THRESHOLD=0"):
        multipart_transfer_config()


def test_a_large_export_goes_up_in_parts_and_downloads_byte_identical(
    s3_storage, settings, tmp_path, client, curator, annotator
):
    settings.S3_MULTIPART_THRESHOLD = 1 * MIB
    settings.S3_MULTIPART_CHUNKSIZE = S3_MIN_PART_BYTES
    storage = fresh_default_storage()
    assert storage.transfer_config.multipart_threshold == 1 * MIB
    version = dpo_version(stored_prompts(storage, [noise_png(900, seed) for seed in range(3)]))

    job = exports.export_enqueue(version=version)
    exports.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    version.refresh_from_db()
    key = f"{version.export_path}/train.parquet"

    head = s3_storage.client.head_object(Bucket=BUCKET, Key=key)
    parts = math.ceil(head["ContentLength"] / S3_MIN_PART_BYTES)
    assert parts >= 2  # larger than one part
    # S3 (and moto) give a multipart object the ETag "<md5 of the parts' md5s>-<parts>".
    assert head["ETag"].strip('"').endswith(f"-{parts}")
    readme = s3_storage.client.head_object(Bucket=BUCKET, Key=f"{version.export_path}/README.md")
    assert "-" not in readme["ETag"]  # small: one PUT
    assert not Path(settings.MEDIA_ROOT).exists()

    # The same version exported here is what the bucket holds, byte for byte, as a
    # curator downloads it: the checked view, then the signed URL.
    local = exports.dataset_version_export(version=version, out_dir=tmp_path / "here")
    expected = next(p for p in local if p.name == "train.parquet").read_bytes()
    client.force_login(curator)
    response = client.get(media(key))
    assert response.status_code == 302
    signed = response["Location"]
    assert "X-Amz-Signature=" in signed and "X-Amz-Expires=120" in signed
    assert fetch(signed) == expected
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(signed.split("?", 1)[0])
    assert refused.value.code == 403
    client.force_login(annotator)
    assert client.get(media(key)).status_code == 403
    # The export page's links are the checked view's, never the bucket's.
    assert dict(exports.export_files(version))["train.parquet"] == media(key)


def test_an_export_run_again_replaces_its_files_under_the_same_names(s3_storage):
    version = dpo_version(stored_prompts(s3_storage.storage, [png_bytes()]))
    for _ in range(2):
        exports.export_job_run(job_id=exports.export_enqueue(version=version).pk)
    version.refresh_from_db()
    listed = s3_storage.client.list_objects_v2(Bucket=BUCKET, Prefix=version.export_path + "/")
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]) == [
        "README.md",
        "train.parquet",
    ]


def test_import_reports_are_written_to_object_storage(s3_storage, tmp_path, client, make_user):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": ""}) + "\n")
    owner = make_user("owner", role="curator")
    with pytest.raises(ImportRejected) as raised:
        prompts_import(path=bad, source_name="bad", fmt="prompts", user=owner)
    key = raised.value.report_name
    stored = s3_storage.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert json.loads(stored)["errors"]
    client.force_login(owner)
    response = client.get(media(key))
    assert response.status_code == 302 and fetch(response["Location"]) == stored
    client.force_login(make_user("other", role="curator"))
    assert client.get(media(key)).status_code == 404


# --- the workers read images through storage ------------------------------------------------


@pytest.fixture
def bucket_shapes(s3_storage, tmp_path):
    """Six shapes prompts imported while storage is the bucket: their images live only there."""
    from datasets_app.core.shapes import make_shapes

    make_shapes(tmp_path / "shapes", n=6, seed=4)
    source = prompts_import(
        path=tmp_path / "shapes" / "scienceqa.parquet", source_name="sqa", fmt="scienceqa"
    ).source
    keys = [p.image.name for p in source.prompts.all()]
    assert all(s3_storage.storage.exists(k) for k in keys)
    return source


def test_the_training_runs_data_carries_the_images_from_the_bucket(
    s3_storage, settings, tmp_path, monkeypatch
):
    """The runner (maybe on another machine) reads only the run folder: the images reach it
    inside the parquet, read from the bucket by the worker, never as local media paths."""
    from training.services import trainings

    images = [png_bytes(colour="red"), png_bytes((20, 12), colour="blue")]
    version = dpo_version(stored_prompts(s3_storage.storage, images))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    base = Checkpoint.objects.create(name="base", model_path=str(model))
    training = trainings.training_launch(
        recipe="dpo", dataset_version=version, base_checkpoint=base, enqueue=False
    )
    monkeypatch.setattr(trainings, "supervise", lambda *a, **k: Outcome(1, stopped=False))
    trainings.training_run(job_id=training.job_id)

    data = Path(training.output_dir) / "data" / "train.parquet"
    rows = list(read_dpo_parquet(data))
    assert [row.images for row in rows] == [(data,) for data in images]
    assert not Path(settings.MEDIA_ROOT).exists()


@pytest.mark.slow
def test_generation_reads_its_images_from_the_bucket(bucket_shapes, tiny_dir, settings):
    from training.core.generation import SamplingParams
    from training.services import generation

    checkpoint = Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    job = generation.generation_launch(
        checkpoint=checkpoint,
        selection={"source_id": bucket_shapes.pk, "limit": 2},
        params=SamplingParams(k=2, temperature=0.7, max_new_tokens=4, seed=0),
        backend="transformers",
        enqueue=False,
    )
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert Completion.objects.filter(checkpoint=checkpoint).count() == 4
    assert not Path(settings.MEDIA_ROOT).exists()


def test_a_judge_is_sent_the_images_from_the_bucket(
    bucket_shapes, s3_storage, settings, fake_openai
):
    from annotation.services import judging

    prompt = bucket_shapes.prompts.order_by("pk").first()
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    Completion.objects.bulk_create(
        Completion(prompt=prompt, checkpoint=checkpoint, text=f"Answer {i}.", sample_index=i)
        for i in range(2)
    )
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_BASE_URL = fake_openai.base_url
    config = judging.judge_config_from_spec("openai:gpt-4o-mini")
    job = judging.judge_launch(
        judge_config=config, selection={"prompt_ids": [prompt.pk]}, enqueue=False
    )
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    (request,) = fake_openai.requests
    in_bucket = s3_storage.client.get_object(Bucket=BUCKET, Key=prompt.image.name)["Body"].read()
    assert [data for _, data in request.images] == [in_bucket]
    assert not Path(settings.MEDIA_ROOT).exists()


def test_export_links_of_a_removed_local_export_are_none():
    version = DatasetVersion.objects.create(
        name="gone", kind="dpo", status="ready", strategy="best_vs_worst"
    )
    version.export_path = "exports/gone/v1-c0"
    assert exports.export_files(version) == []
