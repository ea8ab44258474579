"""Every numeric field of TrainConfig has a meaningful range, checked before anything is
created: a launch with `max_steps=-5` (which TRL reads as "no limit") is refused, from the
service and from the `train` command, and leaves no TrainingJob or Job behind."""

from __future__ import annotations

import json
import math
import typing

import pytest
from django.core.management import CommandError, call_command

from datasets_app.models import DatasetRow, DatasetVersion
from tests import factories
from training.core.recipes.config import NUMERIC_RANGES, PRESETS, ConfigError, TrainConfig
from training.models import Checkpoint, TrainingJob
from training.services import trainings
from workers.models import Job

# (field, a value out of its range, what the message says is allowed)
BAD_VALUES = [
    ("eval_fraction", 1.0, r"in \[0, 1\)"),
    ("eval_fraction", -0.1, r"in \[0, 1\)"),
    ("lora_r", 0, "at least 1"),
    ("lora_alpha", 0, "positive"),
    ("lora_dropout", 1.0, r"in \[0, 1\)"),
    ("learning_rate", 0, "positive"),
    ("learning_rate", math.nan, "positive"),
    ("num_train_epochs", 0, "positive"),
    ("num_train_epochs", -1.5, "positive"),
    ("max_steps", -5, r"at least 1 \(or -1: not set\)"),
    ("max_steps", 0, r"at least 1 \(or -1: not set\)"),
    ("per_device_train_batch_size", 0, "at least 1"),
    ("per_device_eval_batch_size", -2, "at least 1"),
    ("gradient_accumulation_steps", 0, "at least 1"),
    ("warmup_ratio", 1.0, r"in \[0, 1\)"),
    ("weight_decay", -0.01, "non-negative"),
    ("max_grad_norm", -1.0, "non-negative"),
    ("max_grad_norm", math.inf, "non-negative"),
    ("seed", -1, r"in \[0, 4294967295\]"),
    ("seed", 2**32, r"in \[0, 4294967295\]"),
    ("max_length", 0, "at least 1"),
    ("max_image_pixels", 0, "at least 1"),
    ("beta", 0, "positive"),
    ("beta", -0.1, "positive"),
    ("loss_weights", [-1.0], "every item of loss_weights must be non-negative"),
    ("desirable_weight", 0.0, "positive"),
    ("undesirable_weight", -1.0, "positive"),
    ("label_smoothing", 0.5, r"in \[0, 0.5\)"),
    ("label_smoothing", -0.1, r"in \[0, 0.5\)"),
    ("ref_batch_size", 0, "at least 1"),
    ("logging_steps", 0, "at least 1"),
    ("eval_steps", 0, "at least 1"),
    ("save_steps", -1, "non-negative"),
    ("save_total_limit", 0, "at least 1"),
    ("heartbeat_s", 0, "positive"),
    ("torch_threads", 0, "at least 1"),
    ("dataloader_num_workers", -1, "non-negative"),
    ("num_generations", 1, "at least 2"),
    ("max_completion_length", 0, "at least 1"),
    ("generation_temperature", 0.0, "positive"),
    ("format_reward_weight", -0.1, "non-negative"),
    ("grpo_beta", -0.01, "non-negative"),
    ("mixed_lambda", 1.5, r"in \[0, 1\]"),
    ("mixed_lambda", -0.5, r"in \[0, 1\]"),
]


def _numeric_fields() -> set[str]:
    """The fields whose type (or list item type) is int or float."""
    numeric = set()
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = set(typing.get_args(hint)) | {hint}
        args |= {a for arg in list(args) for a in typing.get_args(arg)}  # list[float] items
        if args & {int, float}:
            numeric.add(name)
    return numeric


def test_every_numeric_field_has_a_range_and_a_bad_value_here():
    assert set(NUMERIC_RANGES) == _numeric_fields()
    assert {name for name, _, _ in BAD_VALUES} == set(NUMERIC_RANGES)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def _config(model_dir, **values) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "recipe": "dpo",
            "model_path": str(model_dir),
            "train_file": "unused.parquet",
            "output_dir": str(model_dir.parent / "out"),
            "dataset_kind": "dpo",
            **values,
        }
    )


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_out_of_range_values_are_refused_naming_the_field(model_dir, name, value, allowed):
    extra = {"loss_type": ["sigmoid"]} if name == "loss_weights" else {}
    with pytest.raises(ConfigError, match=allowed) as caught:
        _config(model_dir, **{name: value}, **extra).validate(data_files=False)
    assert f"{name} must be" in str(caught.value)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_presets_and_the_defaults_validate(model_dir, preset):
    _config(model_dir).validate(data_files=False)
    _config(model_dir, preset=preset).validate(data_files=False)
    _config(model_dir, max_steps=1).validate(data_files=False)  # -1 and >= 1 are both fine


@pytest.fixture
def launchable(db, model_dir):
    """A ready DPO version with one training row and a base whose folder has a config."""
    prompt = factories.prompt()
    version = DatasetVersion.objects.create(
        name="pairs", kind="dpo", status="ready", strategy="best_vs_worst"
    )
    DatasetRow.objects.create(
        version=version, prompt=prompt, position=0, question="q", chosen="a", rejected="b"
    )
    base = Checkpoint.objects.create(name="base", model_path=str(model_dir))
    return version, base


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_a_launch_with_an_out_of_range_override_creates_nothing(launchable, name, value, allowed):
    version, base = launchable
    with pytest.raises(ValueError, match=allowed) as caught:
        trainings.training_launch(
            recipe="dpo",
            dataset_version=version,
            base_checkpoint=base,
            overrides={name: value},
            enqueue=False,
        )
    assert f"{name} must be" in str(caught.value)
    assert not TrainingJob.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_steps=-5", r"max_steps must be at least 1 \(or -1: not set\), not -5"),
        ("num_train_epochs=0", "num_train_epochs must be positive, not 0"),
        ("learning_rate=NaN", "learning_rate must be positive, not nan"),
        ("beta=-1", "beta must be positive, not -1"),
    ],
)
def test_the_train_command_refuses_out_of_range_overrides(launchable, override, message):
    with pytest.raises(CommandError, match=message):
        call_command(
            "train", "--recipe", "dpo", "--dataset", "pairs@1", "--base", "base", "--set", override
        )
    assert not TrainingJob.objects.exists() and not Job.objects.exists()


def test_json_round_trip_keeps_a_valid_config_valid(model_dir):
    config = _config(model_dir, preset="seed001_dpo", max_steps=200)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    again.validate(data_files=False)
    assert again == config
