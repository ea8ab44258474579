"""The instruction-tuned start (issue 14 point 1): built once through the project's own
import, curation (`reference_sft`) and full-SFT recipe, then registered from its cache,
keyed by a checksum of the data and every setting. A small recipe keeps this test short;
tests/test_loop.py builds the real one."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from datasets_app.core.shapes import Prior
from datasets_app.models import DatasetVersion, Source
from training.models import Checkpoint, TrainingJob
from training.services.checkpoints import checkpoint_location
from training.services.start import (
    DONE_FILE,
    START_NAME,
    START_TRAINING,
    StartRecipe,
    start_checkpoint,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SMALL = StartRecipe(
    images=40,
    training={**START_TRAINING, "max_steps": 3, "per_device_train_batch_size": 4},
    torch_threads=1,
)


def test_the_start_is_built_once_then_registered_from_its_cache(settings, tmp_path):
    settings.START_CACHE_DIR = str(tmp_path / "start-cache")
    built = start_checkpoint(recipe=SMALL)
    assert not built.cached
    checkpoint = built.checkpoint
    assert checkpoint.name == START_NAME and checkpoint.kind == Checkpoint.Kind.BASE
    assert "70% of the questions about an absent colour" in checkpoint.notes
    folder = checkpoint_location(checkpoint.model_path)
    assert folder == str(built.folder / "model")
    config = json.loads((built.folder / "model" / "config.json").read_text())
    assert config["image_token_norm"] == "text_mean"  # the demo model's configuration
    record = json.loads((built.folder / DONE_FILE).read_text())
    assert record["checksum"].startswith(built.folder.name)
    assert record["rows"] == 40 and sum(record["instruct"]["kinds"].values()) == 40

    training = TrainingJob.objects.get()
    assert training.recipe == "sft" and training.config["finetune"] == "full"
    assert training.config["freeze_vision_tower"] is False
    version = DatasetVersion.objects.get()
    assert version.strategy == "reference_sft" and version.row_count == 40
    assert Source.objects.get().prompts.count() == 40

    again = start_checkpoint(recipe=SMALL)
    assert again.cached and again.checkpoint == checkpoint and again.folder == built.folder
    assert TrainingJob.objects.count() == 1  # nothing trained the second time


def test_a_fresh_database_registers_the_cached_folder_without_training(settings, tmp_path):
    settings.START_CACHE_DIR = str(tmp_path / "start-cache")
    built = start_checkpoint(recipe=SMALL)
    # What a new database sees: no rows, the folder on disk.
    Checkpoint.objects.exclude(parent=None).delete()
    TrainingJob.objects.all().delete()
    Checkpoint.objects.all().delete()
    again = start_checkpoint(recipe=SMALL)
    assert again.cached and not TrainingJob.objects.exists()
    assert checkpoint_location(again.checkpoint.model_path) == str(built.folder / "model")


def test_another_prior_or_setting_is_another_start(settings, tmp_path):
    from training.services.start import _checksum

    settings.START_CACHE_DIR = str(tmp_path / "start-cache")
    data = tmp_path / "same-bytes.parquet"
    data.write_bytes(b"the same data")
    sums = {
        _checksum(recipe, data)
        for recipe in (
            SMALL,
            replace(SMALL, prior=Prior(cooccurrence=0.5)),
            replace(SMALL, training={**SMALL.training, "max_steps": 4}),
            replace(SMALL, seed=1),
        )
    }
    assert len(sums) == 4
    assert _checksum(replace(SMALL, torch_threads=2), data) == _checksum(SMALL, data)
