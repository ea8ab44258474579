"""Experiment tracking (issue 19.5): runs write TensorBoard event files into their folder by
default, add MLflow when MLFLOW_TRACKING_URI is set, and the run page says where."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from training.core.recipes import ConfigError, TrainConfig


@pytest.mark.slow
def test_a_run_writes_tensorboard_events_into_its_folder(tmp_path, tiny_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.test_recipes import make_config, write_shapes
    from training.core.recipes import sft

    train = write_shapes(tmp_path / "data" / "sft.parquet", 16, 1, kind="sft")
    config = make_config(
        tmp_path, tiny_dir, "sft", train, dataset_kind="sft", max_steps=4, logging_steps=2
    )
    assert config.report_to == ["tensorboard"]  # the default
    sft.main(config)
    events = list((tmp_path / "out" / "tensorboard").rglob("events.out.tfevents*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    losses = accumulator.Scalars("train/loss")
    assert [e.step for e in losses] == [2, 4]


def test_trackers_are_checked_where_they_would_be_imported(tmp_path, monkeypatch):
    from training.core.recipes.common import trackers

    base = {
        "recipe": "sft",
        "model_path": str(tmp_path),
        "train_file": "unused.parquet",
        "output_dir": str(tmp_path / "out"),
        "dataset_kind": "sft",
    }
    with pytest.raises(ConfigError, match="report_to names wandb; it takes tensorboard, mlflow"):
        TrainConfig.from_dict({**base, "report_to": ["wandb"]}).validate(data_files=False)
    quiet = TrainConfig.from_dict({**base, "report_to": []})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert trackers(quiet) == []
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    # MLflow is an optional extra, not installed here: the run is refused, saying what to add.
    with pytest.raises(ConfigError, match=r"report_to needs mlflow \(pip install"):
        trackers(quiet)


def test_the_run_page_says_where_the_metrics_went(tmp_path, monkeypatch):
    from training.selectors import training_tracking

    folder = tmp_path / "run" / "tensorboard"
    run = SimpleNamespace(config={"report_to": ["tensorboard"]}, output_dir=str(tmp_path / "run"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert training_tracking(run) == {"tensorboard": str(folder), "tensorboard_exists": False}
    folder.mkdir(parents=True)
    (folder / "events.out.tfevents.1.host").write_bytes(b"")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    found = training_tracking(run)
    assert found["tensorboard_exists"] and found["mlflow"] == "http://mlflow.example:5000"
    assert training_tracking(SimpleNamespace(config={"report_to": []}, output_dir="x")) == {
        "mlflow": "http://mlflow.example:5000",
        "mlflow_experiment": "preference-studio",
    }
