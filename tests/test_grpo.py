"""GRPO with a verifiable reward (issue 17.4): the reward reads each answer the way its
reference is written; GRPO samples from the instruction-tuned start inside the recipe,
logs the reward's mean and spread, and moves the weights."""

from __future__ import annotations

import random

import pytest

from training.core import verifiable


@pytest.mark.parametrize(
    ("answer", "reference", "right", "readable"),
    [
        ("Yes", "yes", 1.0, 1.0),
        ("yes, there is", "Yes.", 1.0, 1.0),
        ("No", "yes", 0.0, 1.0),
        ("maybe", "no", 0.0, 0.0),
        ("The answer is B.", "B", 1.0, 1.0),
        ("B", "The answer is B.", 1.0, 1.0),
        ("C.", "The answer is B.", 0.0, 1.0),
        ("Red.", "red", 1.0, 1.0),
        ("2", "3", 0.0, 1.0),
        ("red and then a long story about it", "red", 1.0, 0.0),
        ("", "red", 0.0, 0.0),
    ],
)
def test_the_verifiable_reward_reads_an_answer_as_its_reference_is_written(
    answer, reference, right, readable
):
    assert verifiable.answer_reward(answer, reference) == right
    assert verifiable.format_reward(answer, reference) == readable


def _colour_rows(path, n: int, seed: int):
    """SFT rows of the colour of one big shape, answered with the colour's name."""
    from datasets_app.core.curation.types import SftRow
    from datasets_app.core.export.parquet import ExportItem, write_sft_parquet
    from datasets_app.core.shapes import COLOURS, KINDS, Scene, Shape, draw_scene, png_bytes

    rng = random.Random(seed)
    items, images = [], {}
    for i in range(n):
        colour, kind = rng.choice(list(COLOURS)[:4]), rng.choice(KINDS)
        key = f"c/{i}.png"
        images[key] = png_bytes(
            draw_scene(Scene(32, 32, "white", (Shape(kind, colour, 16, 16, 24),)))
        )
        question = f"What colour is the {kind}?\nAnswer the question using a single word or phrase."
        items.append(ExportItem(SftRow(i, question, colour), key))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sft_parquet(path, items, images.__getitem__)
    return path


@pytest.mark.slow
@pytest.mark.django_db
def test_grpo_from_the_start_samples_rewards_and_moves_the_weights(settings, tmp_path, start_cache):
    import torch

    from tests.test_recipes import make_config
    from training.core.recipes import ConfigError, TrainConfig, grpo
    from training.services.start import start_checkpoint

    settings.START_CACHE_DIR = str(start_cache)
    start = start_checkpoint().checkpoint
    train = _colour_rows(tmp_path / "data" / "train.parquet", 48, 0)
    config = make_config(
        tmp_path,
        start.model_path,
        "grpo",
        train,
        dataset_kind="sft",
        finetune="full",
        learning_rate=1e-4,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=4,
        max_steps=6,
        logging_steps=2,
    )
    config.validate()
    before = {n: p.detach().clone() for n, p in _model(start.model_path).named_parameters()}
    result = grpo.main(config)
    logged = [h for h in result.trainer.state.log_history if "reward" in h]
    assert len(logged) == 3
    # The start knows colours, not perfectly: rewards vary within groups, so GRPO learns.
    assert all(0 < h["reward"] <= 1.1 for h in logged), logged
    assert any(h["reward_std"] > 0 for h in logged)
    assert all("completions/mean_length" in h for h in logged)
    after = dict(result.trainer.model.named_parameters())
    moved = [n for n, p in before.items() if not torch.equal(p, after[n].detach().cpu())]
    assert moved and any("language_model" in n for n in moved)

    for bad, message in (
        ({"num_generations": 3}, "multiple of num_generations"),
        ({"grpo_loss_type": "ppo"}, "grpo_loss_type must be one of"),
        ({"loss_type": ["ipo"]}, "apply to dpo and online_dpo only, not grpo"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict({**config.to_dict(), **bad}).validate()


def _model(path):
    from training.core.modeling import load_policy

    return load_policy(str(path), device="cpu").model


def test_the_run_page_draws_grpos_reward_and_answer_length_as_they_come():
    from training.core.protocol import TrainingProgress
    from training.selectors import training_charts

    progress = TrainingProgress()
    for step, reward in ((2, 0.4), (4, 0.6)):
        progress.feed(
            {
                "event": "metrics",
                "step": step,
                "loss": 0.1,
                "reward": reward,
                "reward_std": 0.3,
                "completions/mean_length": 2.5,
            }
        )
    assert [p["reward"] for p in progress.history] == [0.4, 0.6]
    charts = "".join(training_charts({"training": progress.to_dict()}))
    assert "GRPO reward" in charts and "Completion length" in charts
