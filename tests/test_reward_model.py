"""The reward model (issue 17.1): the VLM backbone with a scalar head, trained with the
Bradley-Terry loss on DPO pairs; held-out pairwise accuracy is logged, and the saved model
reads back and scores as it did in training."""

from __future__ import annotations

import pytest
import torch

from tests.test_recipes import make_config, write_shapes

pytestmark = pytest.mark.slow


def test_bradley_terry_is_the_log_sigmoid_of_the_margin():
    from training.core.recipes.reward import bradley_terry

    terms = bradley_terry(torch.tensor([2.0, 0.0, -1.0, 1.0]))  # chosen 2, 0; rejected -1, 1
    margins = torch.tensor([3.0, -1.0])
    assert torch.isclose(terms["loss"], -torch.nn.functional.logsigmoid(margins).mean())
    assert terms["rewards/accuracies"].item() == 0.5 and terms["rewards/margins"].item() == 1.0


def _letter_pairs(path, n: int, seed: int):
    import random
    from dataclasses import replace

    from datasets_app.core.curation.types import PreferenceRow
    from datasets_app.core.export.parquet import write_dpo_parquet
    from tests.test_recipes import shapes_items

    rng = random.Random(seed)
    items, images = shapes_items(n, seed, kind="dpo")
    rows = [
        replace(
            item,
            row=PreferenceRow(
                item.row.prompt_id,
                item.row.question,
                f"The answer is {rng.choice('AB')}.",
                f"The answer is {rng.choice('CD')}.",
            ),
        )
        for item in items
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dpo_parquet(path, rows, images.__getitem__)
    return path


@pytest.mark.parametrize("head", ["likelihood", "last_token"])
def test_a_reward_model_learns_the_pairs_and_scores_the_same_after_reloading(
    tmp_path, tiny_dir, head
):
    from training.core.recipes import reward
    from training.core.recipes.common import VisionCollator, load_parquet

    # A preference the tiny random model can learn in a few steps from the text alone
    # (letters A/B over C/D), so that held-out accuracy measures the machinery.
    train = _letter_pairs(tmp_path / "train" / "dpo.parquet", 128, 1)
    evals = _letter_pairs(tmp_path / "eval" / "dpo.parquet", 40, 2)
    config = make_config(
        tmp_path,
        tiny_dir,
        "reward",
        train,
        dataset_kind="dpo",
        eval_file=str(evals),
        max_steps=40,
        logging_steps=10,
        eval_steps=20,
        learning_rate=1e-3,
        reward_head=head,
    )
    config.validate()
    result = reward.main(config)
    history = result.trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    held_out = [h["eval_rewards/accuracies"] for h in history if "eval_rewards/accuracies" in h]
    assert len(held_out) >= 2 and held_out[-1] >= 0.9, held_out
    assert result.eval_metrics["eval_rewards/accuracies"] == held_out[-1]
    final = result.final_dir
    assert reward.is_reward_model(final) and (final / "adapter_config.json").is_file()

    # Read back, it scores every row as the trained model does.
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    loaded, processor = reward.load_reward_model(
        str(tiny_dir), adapter_path=str(final), device="cpu"
    )
    rows = list(load_parquet(str(evals), tmp_path / "c"))[:6]
    collator = VisionCollator(DataCollatorForVisionPreference(processor))
    trained = result.trainer.model.eval()
    assert loaded.kind == head
    assert loaded.scores(collator, rows, 3) == pytest.approx(
        trained.scores(collator, rows, 6), abs=1e-4
    )
    with pytest.raises(ValueError, match="not a reward model"):
        reward.load_reward_model(str(tiny_dir))


def test_a_stopped_reward_model_run_resumes_from_its_small_checkpoint(tmp_path, tiny_dir):
    from dataclasses import replace

    from safetensors import safe_open

    from training.core.recipes import reward

    train = write_shapes(tmp_path / "train" / "dpo.parquet", 64, 1, kind="dpo")
    first = make_config(
        tmp_path, tiny_dir, "reward", train, dataset_kind="dpo", max_steps=8, save_steps=8
    )
    reward.main(first)
    saved = tmp_path / "out" / "checkpoint-8" / "model.safetensors"
    with safe_open(str(saved), "pt") as stored:
        names = list(stored.keys())
    # Only what trains is kept: the LoRA weights and the head, no frozen base weight.
    assert "head.weight" in names and all("lora_" in n or n == "head.weight" for n in names)
    # Mark the checkpoint's head: a run that resumes from it keeps the mark (Adam moves a
    # weight by about the learning rate a step), a run from scratch would not have it.
    from safetensors.torch import load_file, save_file

    state = load_file(str(saved))
    state["head.weight"] = torch.full_like(state["head.weight"], 5.0)
    save_file(state, str(saved))
    resumed = reward.main(replace(first, max_steps=16, resume=True))
    assert resumed.global_step == 16
    head = resumed.trainer.model.head.weight
    assert (head - 5.0).abs().max() < 8 * first.learning_rate * 2
