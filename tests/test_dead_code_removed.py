"""Code nothing called is gone: two campaign helpers, `Prompt.answer_text`, and the Job.params
keys the training and evaluation launches wrote but nothing read (each run row already points
at its job)."""

from __future__ import annotations

import pytest

from annotation.services import campaigns
from datasets_app.core.shapes import make_shapes
from datasets_app.models import Prompt
from tests import factories
from tests.test_training_jobs import shapes_versions
from training.models import Checkpoint
from training.services import evaluations, trainings


def test_unused_helpers_are_gone():
    assert not hasattr(campaigns, "campaign_progress")
    assert not hasattr(campaigns, "item_ratings")
    assert not hasattr(Prompt, "answer_text")


@pytest.mark.django_db
def test_an_evaluation_job_carries_no_unread_params(tmp_path):
    make_shapes(tmp_path / "shapes", n=6, seed=3)
    run = evaluations.evaluation_launch(
        checkpoint=factories.checkpoint(),
        task="scienceqa",
        data=str(tmp_path / "shapes" / "scienceqa.parquet"),
        enqueue=False,
    )
    run.job.refresh_from_db()
    assert run.job.params == {"chunk_size": 64}  # read when the job splits (workers.chunks)


@pytest.mark.django_db
def test_a_training_job_carries_no_unread_params(settings, tmp_path, tiny_dir):
    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    settings.MEDIA_ROOT = tmp_path / "media"
    base = Checkpoint.objects.create(name="tiny-base", model_path=str(tiny_dir))
    versions = shapes_versions(tmp_path, base, n=8)
    training = trainings.training_launch(
        recipe="sft", dataset_version=versions["sft"], base_checkpoint=base, enqueue=False
    )
    training.job.refresh_from_db()
    assert training.job.params == {}
