"""Online and mixed DPO (issue 17.2-3): the policy answers each prompt K times inside the
step, a ranker picks the best and the worst, and DPO trains on them; with probability
lambda a row trains on its stored pair instead."""

from __future__ import annotations

import random

import pytest

from training.core.recipes import ConfigError, TrainConfig


def test_the_best_and_the_worst_answer_make_the_pair_and_a_tie_makes_none():
    from training.core.recipes.online_dpo import best_and_worst

    assert best_and_worst([0.0, 1.1, 0.1, 1.1]) == (1, 0)
    assert best_and_worst([1.0, 1.0, 1.0]) is None


def test_the_verifiable_ranker_scores_the_answer_and_a_little_for_its_form():
    from training.core.recipes.online_dpo import verifiable_ranker

    rank = verifiable_ranker(0.1)
    rows = [{"reference": "red"}] * 3
    assert rank(rows, ["Red.", "blue", "a red one, I think, or so"]) == pytest.approx(
        [1.1, 0.1, 0.0]
    )


def _pairs(path, n: int, seed: int, *, reference: bool = True):
    """Pairs about the colour of one big shape: chosen names it, rejected names another;
    the prompt's reference answer is the colour."""
    from datasets_app.core.curation.types import PreferenceRow
    from datasets_app.core.export.parquet import ExportItem, write_dpo_parquet
    from datasets_app.core.shapes import COLOURS, KINDS, Scene, Shape, draw_scene, png_bytes

    rng = random.Random(seed)
    colours = list(COLOURS)[:4]
    items, images = [], {}
    for i in range(n):
        colour, kind = rng.choice(colours), rng.choice(KINDS)
        other = rng.choice([c for c in colours if c != colour])
        key = f"c/{i}.png"
        images[key] = png_bytes(
            draw_scene(Scene(32, 32, "white", (Shape(kind, colour, 16, 16, 24),)))
        )
        question = f"What colour is the {kind}?\nAnswer the question using a single word or phrase."
        row = PreferenceRow(i, question, colour, other)
        items.append(ExportItem(row, key, reference=colour if reference else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dpo_parquet(path, items, images.__getitem__)
    return path


def _config(tmp_path, start, train, **overrides):
    from tests.test_recipes import make_config

    values = {
        "dataset_kind": "dpo",
        "learning_rate": 3e-4,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 4,
        "generation_temperature": 1.0,
        "max_steps": 4,
        "logging_steps": 2,
        **overrides,
    }
    return make_config(tmp_path, start, "online_dpo", train, **values)


def _changed(before, model) -> list[str]:
    import torch

    after = dict(model.named_parameters())
    return [n for n, p in before.items() if n in after and not torch.equal(p, after[n].detach())]


@pytest.mark.slow
@pytest.mark.django_db
def test_online_dpo_samples_ranks_and_trains_and_mixed_dpo_draws_stored_pairs(
    settings, tmp_path, start_cache
):
    from training.core.recipes import online_dpo
    from training.services.start import start_checkpoint

    settings.START_CACHE_DIR = str(start_cache)
    start = start_checkpoint().checkpoint.model_path
    train = _pairs(tmp_path / "data" / "train.parquet", 24, 0)

    config = _config(tmp_path / "online", start, train)
    config.validate()
    result = online_dpo.main(config)
    logged = [h for h in result.trainer.state.log_history if "online/reward" in h]
    assert len(logged) == 2, result.trainer.state.log_history
    # The start knows colours, not perfectly: its K answers differ, so pairs are made ...
    assert all(0 <= h["online/reward"] <= 1.1 for h in logged)
    assert sum(h["online/pairs"] for h in logged) > 0
    assert all(h["online/offline_fraction"] == 0 for h in logged)
    assert logged[-1]["online/generated_tokens"] > 0
    # ... and DPO trains on them: the adapter moved away from zero.
    lora_b = [p for n, p in result.trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)

    # lambda = 1: every row trains on its stored pair, nothing is sampled.
    offline = online_dpo.main(_config(tmp_path / "offline", start, train, mixed_lambda=1.0))
    logged = [h for h in offline.trainer.state.log_history if "online/pairs" in h]
    assert all(h["online/offline_fraction"] == 1 and h["online/pairs"] == 4 for h in logged)
    assert all("online/reward" not in h for h in logged)
    assert logged[-1]["online/generated_tokens"] == 0

    # lambda = 0.5: both halves, drawn per row.
    mixed = online_dpo.main(_config(tmp_path / "mixed", start, train, mixed_lambda=0.5))
    fractions = [
        h["online/offline_fraction"]
        for h in mixed.trainer.state.log_history
        if "online/offline_fraction" in h
    ]
    assert fractions and 0 < sum(fractions) / len(fractions) < 1


def test_every_recipe_can_be_launched_from_the_site():
    from training.core.recipes import RECIPES
    from training.models import TrainingJob

    assert set(TrainingJob.Recipe.values) == set(RECIPES)


def test_online_dpo_configs_refuse_what_they_would_not_honour(tmp_path):
    base = {
        "recipe": "online_dpo",
        "model_path": str(tmp_path),
        "train_file": str(tmp_path / "train.parquet"),
        "output_dir": str(tmp_path / "out"),
        "dataset_kind": "dpo",
    }
    (tmp_path / "config.json").write_text("{}")  # a model folder, as far as validate looks
    not_a_reward_model = tmp_path / "rm"
    not_a_reward_model.mkdir()
    for bad, message in (
        ({"mixed_lambda": 1.5}, "mixed_lambda"),
        ({"online_ranker": "rater:gemini"}, "online_ranker must be one of verifiable"),
        ({"online_ranker": "judge:gemini"}, "a judge is judge:local:PATH"),
        ({"online_ranker": f"reward:{not_a_reward_model}"}, "is not a reward model"),
        ({"recipe": "dpo", "mixed_lambda": 0.5}, "apply to online_dpo only, not dpo"),
        ({"recipe": "dpo", "reward_head": "last_token"}, "reward_head applies to reward only"),
        ({"recipe": "reward", "reward_head": "mean"}, "reward_head must be one of"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict({**base, **bad}).validate(data_files=False)
    TrainConfig.from_dict({**base, "mixed_lambda": 1.0}).validate(data_files=False)


@pytest.mark.slow
def test_online_dpo_needs_reference_answers_to_verify_against(tmp_path, tiny_dir):
    from training.core.recipes import online_dpo

    train = _pairs(tmp_path / "data" / "train.parquet", 8, 0, reference=False)
    with pytest.raises(ValueError, match="8 of 8 rows have no reference answer"):
        online_dpo.main(_config(tmp_path, tiny_dir, train))
    # Offline pairs alone (lambda 1) need none.
    online_dpo.main(_config(tmp_path / "offline", tiny_dir, train, mixed_lambda=1.0, max_steps=1))


@pytest.mark.slow
def test_a_reward_model_can_rank_the_online_samples(tmp_path, tiny_dir):
    from tests.test_recipes import make_config
    from training.core.recipes import online_dpo, reward

    train = _pairs(tmp_path / "data" / "train.parquet", 16, 0)
    trained = reward.main(
        make_config(tmp_path / "rm", tiny_dir, "reward", train, dataset_kind="dpo", max_steps=2)
    )
    config = _config(
        tmp_path / "policy",
        tiny_dir,
        train,
        online_ranker=f"reward:{trained.final_dir}",
        max_steps=2,
        logging_steps=1,
    )
    config.validate()
    result = online_dpo.main(config)
    logged = [h for h in result.trainer.state.log_history if "online/reward" in h]
    # Reward-model scores are log-likelihoods: real numbers, never a tie, so every prompt
    # makes a pair.
    assert len(logged) == 2 and all(h["online/reward"] < 0 for h in logged)
    assert all(h["online/pairs"] == 4 and h["online/tied_fraction"] == 0 for h in logged)


@pytest.mark.slow
def test_an_api_judge_ranks_the_samples_in_the_runner_and_pays_once(
    tmp_path, tiny_dir, fake_openai, monkeypatch
):
    from training.core.recipes import online_dpo
    from training.core.recipes.common import load_parquet
    from training.core.recipes.judge_ranker import CACHE_FILE, JudgeRanker, build_judge

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    train = _pairs(tmp_path / "data" / "train.parquet", 8, 0)
    config = _config(
        tmp_path / "policy",
        tiny_dir,
        train,
        online_ranker="judge:openai:gpt-4o-mini",
        max_steps=2,
        logging_steps=1,
    )
    config.validate()
    result = online_dpo.main(config)
    logged = [h for h in result.trainer.state.log_history if "online/judge_calls" in h]
    # One call a prompt rates its K=4 answers: 4 prompts a step, 2 steps.
    assert fake_openai.calls == 8 and logged[-1]["online/judge_calls"] == 8
    assert logged[-1]["online/judge_cost_usd"] > 0
    assert all(h["online/pairs"] > 0 for h in logged)  # the fake's scores differ by text
    assert len((tmp_path / "policy" / "out" / CACHE_FILE).read_text().splitlines()) == 8

    # A restarted runner asks for the same answers again: all from the file cache.
    rows = list(load_parquet(str(train), tmp_path / "c"))[:2]
    answers = ["red", "blue", "green", "yellow", "red.", "a red one", "blue", "no"]
    flat = [row for row in rows for _ in range(4)]
    first = JudgeRanker(build_judge("openai:gpt-4o-mini"), cache_dir=tmp_path, k=4)
    scores = first(flat, answers)
    assert first.calls == 2 and len(scores) == 8
    again = JudgeRanker(build_judge("openai:gpt-4o-mini"), cache_dir=tmp_path, k=4)
    assert again(flat, answers) == scores and again.calls == 0
    assert fake_openai.calls == 10
