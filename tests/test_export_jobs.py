"""Exporting versions (frozen, byte-stable, loadable) and importing preference files back."""

from __future__ import annotations

import filecmp

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation.models import ATTRIBUTES, Completion, PairPick, Rating
from datasets_app.core.export import read_dpo_parquet
from datasets_app.models import DatasetVersion, Prompt
from datasets_app.services import exports, versions
from tests import factories
from training.models import Checkpoint
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


@pytest.fixture
def version(shapes_source):
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    judge = factories.judge("oracle")
    for prompt in shapes_source.prompts.all():
        for i, score in enumerate((4, 1)):
            completion = Completion.objects.create(
                prompt=prompt,
                checkpoint=checkpoint,
                text=f"answer {i} to {prompt.pk}",
                sample_index=i,
            )
            Rating.objects.create(
                completion=completion, judge=judge, **dict.fromkeys(ATTRIBUTES, score)
            )
    return versions.dataset_version_build(
        name="pairs",
        strategy="best_vs_worst",
        selection={"source_id": shapes_source.pk},
        filters={"eval_fraction": 0.34},
    )


def test_an_export_loads_with_datasets_and_carries_the_rows(version, tmp_path):
    import datasets

    files = exports.dataset_version_export(version=version, out_dir=tmp_path / "out")
    assert {p.name for p in files} == {"train.parquet", "eval.parquet", "README.md"}
    loaded = datasets.load_dataset(
        "parquet",
        data_files={s: str(tmp_path / "out" / f"{s}.parquet") for s in ("train", "eval")},
        cache_dir=str(tmp_path / "cache"),
    )
    assert len(loaded["train"]) + len(loaded["eval"]) == version.row_count == 6
    row = loaded["train"][0]
    assert row["images"][0].size == (64, 64)
    assert row["chosen"][0]["content"][0]["text"].startswith("answer 0")
    assert row["chosen_scores"]["helpfulness"] == 4 and row["margin"] == 9
    card = (tmp_path / "out" / "README.md").read_text()
    assert "best_vs_worst" in card and "oracle" in card


def test_a_version_exports_byte_identically_after_ratings_change(version, tmp_path):
    exports.dataset_version_export(version=version, out_dir=tmp_path / "a")
    Rating.objects.update(helpfulness=0, correctness=0)
    Completion.objects.update(text="rewritten")
    exports.dataset_version_export(version=version, out_dir=tmp_path / "b")
    for name in ("train.parquet", "eval.parquet", "README.md"):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name


def test_round_trip_export_import_export_keeps_the_rows(version, tmp_path):
    exports.dataset_version_export(version=version, out_dir=tmp_path / "first")
    for split in ("train", "eval"):
        call_command(
            "import_prompts",
            str(tmp_path / "first" / f"{split}.parquet"),
            source=f"back-{split}",
            format="dpo",
        )
    assert PairPick.objects.filter(source__isnull=False).count() == 6
    sources = list(version.sources.all())
    again = versions.dataset_version_build(
        name="back",
        strategy="human_pick",
        selection={
            "prompt_ids": list(
                Prompt.objects.exclude(source__in=sources).values_list("id", flat=True)
            )
        },
    )
    exports.dataset_version_export(version=again, out_dir=tmp_path / "second")

    def pairs(folder):
        out = set()
        for split in ("train", "eval"):
            path = folder / f"{split}.parquet"
            if path.exists():
                out |= {
                    (p.question, p.chosen, p.rejected, p.images) for p in read_dpo_parquet(path)
                }
        return out

    assert pairs(tmp_path / "first") == pairs(tmp_path / "second")
    # Importing the same file again adds nothing.
    call_command(
        "import_prompts",
        str(tmp_path / "first" / "train.parquet"),
        source="back-train",
        format="dpo",
    )
    assert PairPick.objects.filter(source__isnull=False).count() == 6


def test_a_file_that_is_not_a_preference_set_is_refused(shapes_source, tmp_path):
    with pytest.raises(CommandError, match="missing column"):
        call_command(
            "import_prompts",
            str(tmp_path / "shapes" / "scienceqa.parquet"),
            source="wrong",
            format="dpo",
        )
    assert not PairPick.objects.exists()


def test_export_command_and_the_download_job(version, client, curator, tmp_path):
    call_command("export", "pairs@1", out=str(tmp_path / "cli"))
    assert (tmp_path / "cli" / "train.parquet").exists()
    with pytest.raises(CommandError, match="no dataset version"):
        call_command("export", "pairs@7", out=str(tmp_path / "x"))
    client.force_login(curator)
    response = client.post(reverse("datasets_app:version_export", args=[version.pk]))
    job = Job.objects.get(kind=Job.Kind.EXPORT)
    assert response["Location"] == reverse("workers:job", args=[job.pk])
    exports.export_job_run(job_id=job.pk)
    version.refresh_from_db()
    page = client.get(reverse("datasets_app:version", args=[version.pk])).content.decode()
    assert "train.parquet</a>" in page and version.export_path in page
    assert DatasetVersion.objects.get().export_path.startswith("exports/pairs/v1-")


def test_an_sft_export_imports_back_with_its_answers(version, tmp_path):
    source = version.sources.first()
    sft = versions.dataset_version_build(
        name="best", strategy="rejection_sampling", selection={"source_id": source.pk}
    )
    exports.dataset_version_export(version=sft, out_dir=tmp_path / "sft")
    call_command(
        "import_prompts", str(tmp_path / "sft" / "train.parquet"), source="sft-back", format="sft"
    )
    imported = Completion.objects.filter(prompt__source__name="sft-back")
    assert imported.count() == sft.rows.filter(split="train").count()
    assert set(imported.values_list("text", flat=True)) == set(
        sft.rows.filter(split="train").values_list("chosen", flat=True)
    )
    assert not PairPick.objects.filter(source__name="sft-back").exists()
