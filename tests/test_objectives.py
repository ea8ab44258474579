"""The preference objectives beyond DPO/IPO/hinge (issue 16 point 3), each on the tiny
model: its config is checked before a model loads, its loss decreases on a small set and
the parameters move."""

from __future__ import annotations

import math

import pytest

from tests.test_recipes import make_config, write_shapes
from training.core.recipes import PRESETS, TrainConfig

pytestmark = pytest.mark.slow


def _losses(result) -> list[float]:
    return [h["loss"] for h in result.trainer.state.log_history if "loss" in h]


def test_the_mpo_preset_is_dpo_with_the_bco_and_sft_terms_and_it_learns(tmp_path, tiny_dir):
    from training.core.recipes import dpo

    assert PRESETS["mpo"] == {
        "loss_type": ["sigmoid", "bco_pair", "sft"],
        "loss_weights": [0.8, 0.2, 1.0],
    }
    train = write_shapes(tmp_path / "dpo.parquet", 64, 1, kind="dpo")
    config = make_config(
        tmp_path,
        tiny_dir,
        "dpo",
        train,
        preset="mpo",
        max_steps=24,
        logging_steps=4,
        learning_rate=2e-3,
        precompute_ref_logps=True,
    )
    config.validate()
    assert config.loss_type == ["sigmoid", "bco_pair", "sft"] and config.loss_weights == [
        0.8,
        0.2,
        1.0,
    ]
    result = dpo.main(config)
    losses = _losses(result)
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    lora_b = [p for n, p in result.trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    # Three losses need three weights: a mismatch is refused before a model is loaded.
    values = {**config.to_dict(), "loss_weights": [0.8, 0.2]}
    from training.core.recipes import ConfigError

    with pytest.raises(ConfigError, match="loss_weights"):
        TrainConfig.from_dict(values).validate()


def _kto_file(path, n: int, seed: int):
    """KTO rows from the shapes colour question: the right letter desirable, a wrong one
    undesirable, alternating."""
    from dataclasses import replace as copy

    from datasets_app.core.curation.types import SftRow
    from datasets_app.core.export.parquet import ExportItem, write_kto_parquet
    from tests.test_recipes import shapes_items

    items, images = shapes_items(n, seed, kind="dpo")
    rows = []
    for i, item in enumerate(items):
        pair = item.row
        good = i % 2 == 0
        row = SftRow(
            pair.prompt_id,
            pair.question,
            pair.chosen if good else pair.rejected,
            label="desirable" if good else "undesirable",
        )
        rows.append(copy(item, row=row))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_kto_parquet(path, [ExportItem(r.row, r.image_key) for r in rows], images.__getitem__)
    return path


def test_kto_trains_on_unpaired_examples_and_refuses_a_batch_of_one(tmp_path, tiny_dir):
    import datasets

    from training.core.recipes import ConfigError, kto

    train = _kto_file(tmp_path / "kto.parquet", 64, 1)
    loaded = datasets.load_dataset("parquet", data_files=str(train), cache_dir=str(tmp_path / "c"))
    row = loaded["train"][0]
    assert row["label"] is True and row["completion"][0]["role"] == "assistant"
    config = make_config(
        tmp_path,
        tiny_dir,
        "kto",
        train,
        max_steps=24,
        logging_steps=4,
        learning_rate=2e-3,
        dataset_kind="kto",
    )
    config.validate()
    result = kto.main(config)
    losses = _losses(result)
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    lora_b = [p for n, p in result.trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    one = TrainConfig.from_dict({**config.to_dict(), "per_device_train_batch_size": 1})
    with pytest.raises(ConfigError, match="KTO needs per_device_train_batch_size >= 2"):
        one.validate()


@pytest.mark.django_db
@pytest.mark.db_backend
def test_the_kto_strategy_labels_by_thresholds_and_exports_for_trl(shapes_source, tmp_path):
    import datasets

    from annotation.models import ATTRIBUTES, Completion, Rating
    from datasets_app.services import exports, versions
    from tests import factories
    from training.models import Checkpoint

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    judge = factories.judge("oracle")
    for prompt in shapes_source.prompts.all():
        for i, score in enumerate((4, 2, 0)):  # desirable, neither, undesirable
            completion = Completion.objects.create(
                prompt=prompt, checkpoint=checkpoint, text=f"answer {i}", sample_index=i
            )
            Rating.objects.create(
                completion=completion, judge=judge, **dict.fromkeys(ATTRIBUTES, score)
            )
    version = versions.dataset_version_build(
        name="kto-set",
        strategy="kto",
        params={"include_heldout": True},
        selection={"source_id": shapes_source.pk},
        filters={"eval_fraction": 0.0},
    )
    n = shapes_source.prompts.count()
    assert version.kind == "kto" and version.row_count == 2 * n
    assert version.stats["dropped"] == {"completion neither desirable nor undesirable": n}
    exports.dataset_version_export(version=version, out_dir=tmp_path / "out")
    data = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "out" / "train.parquet"), cache_dir=str(tmp_path)
    )["train"]
    assert sorted(data["label"]) == [False] * n + [True] * n
    good = [r["completion"][0]["content"][0]["text"] for r in data if r["label"]]
    assert set(good) == {"answer 0"}
    assert "KTOTrainer" in (tmp_path / "out" / "README.md").read_text()


def test_mdpo_terms_are_the_three_log_sigmoids_of_its_definition():
    import torch
    import torch.nn.functional as F

    from training.core.recipes.mdpo import mdpo_losses

    pc, pr, pcc = torch.tensor([-2.0, -1.0]), torch.tensor([-3.0, -0.5]), torch.tensor([-4.0, -1.5])
    rc, rr, rcc = torch.tensor([-2.5, -1.2]), torch.tensor([-2.0, -0.7]), torch.tensor([-3.0, -1.0])
    beta = 0.1
    terms = mdpo_losses(pc, pr, pcc, rc, rr, rcc, beta)
    expected = (
        -F.logsigmoid(beta * ((pc - pr) - (rc - rr)))
        - F.logsigmoid(beta * ((pc - pcc) - (rc - rcc)))
        - F.logsigmoid(beta * (pc - rc))
    )
    assert torch.allclose(terms["loss"], expected)
    # Policy = reference: each term is log 2.
    same = mdpo_losses(pc, pr, pcc, pc, pr, pcc, beta)
    assert torch.allclose(same["loss"], torch.full((2,), 3 * math.log(2)))


def test_a_corrupted_image_is_seeded_and_hides_most_of_the_image():
    from PIL import Image, ImageDraw

    from training.core.recipes.mdpo import corrupt_image

    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((0, 0, 9, 9), fill="red")
    ImageDraw.Draw(image).rectangle((54, 54, 63, 63), fill="blue")
    gradient = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    for kind in ("crop", "noise"):
        a, b = corrupt_image(gradient, kind, 3), corrupt_image(gradient, kind, 3)
        assert a.size == gradient.size and a.tobytes() == b.tobytes()
        assert corrupt_image(gradient, kind, 4).tobytes() != a.tobytes()
    # A crop keeps at most a fifth of the area (a side of at most 34 px here): never both
    # opposite corners.
    for seed in range(20):
        colours = {c for _, c in corrupt_image(image, "crop", seed).getcolors(64 * 64 * 4)}
        has_red = any(r > 200 and g < 80 and b < 80 for r, g, b in colours)
        has_blue = any(b > 200 and r < 80 and g < 80 for r, g, b in colours)
        assert not (has_red and has_blue)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_image(image, "blur", 0)


def test_mdpo_learns_with_its_reference_precomputed_including_the_corrupted_pass(
    tmp_path, tiny_dir
):
    import numpy as np

    from training.core.recipes import ConfigError, mdpo

    train = write_shapes(tmp_path / "dpo.parquet", 64, 1, kind="dpo")
    config = make_config(
        tmp_path,
        tiny_dir,
        "mdpo",
        train,
        dataset_kind="dpo",
        max_steps=24,
        logging_steps=4,
        learning_rate=2e-3,
    )
    config.validate()
    events = []
    result = mdpo.main(config, report=events.append)
    losses = _losses(result)
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    assert losses[0] == pytest.approx(3 * math.log(2), abs=0.05)  # policy = reference at first
    lora_b = [p for n, p in result.trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    logged = [h for h in result.trainer.state.log_history if "mdpo/conditional" in h]
    assert logged and all("rewards/corrupted" in h for h in logged)
    # Two reference passes (the pairs, the chosen answer under the corrupted image), both
    # stored; a second run on the same data and reference reads them back.
    refs = [e for e in events if e.get("event") == "ref_logps"]
    assert len(refs) == 2 and not any(e["cached"] for e in refs)
    stored = [np.load(e["path"])["chosen"] for e in refs]
    assert not np.allclose(stored[0], stored[1])  # the corrupted image changes the log-prob
    again = make_config(
        tmp_path / "again",
        tiny_dir,
        "mdpo",
        train,
        dataset_kind="dpo",
        max_steps=1,
        ref_logps_cache_dir=str(config.output_dir) + "/ref_logps",
    )
    events.clear()
    mdpo.main(again, report=events.append)
    assert [e["cached"] for e in events if e.get("event") == "ref_logps"] == [True, True]

    for bad, message in (
        ({"mdpo_corruption": "blur"}, "mdpo_corruption must be one of crop, noise"),
        ({"precompute_ref_logps": False}, "mdpo always precomputes"),
        ({"loss_type": ["ipo"]}, "apply to dpo and online_dpo only, not mdpo"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict({**config.to_dict(), **bad}).validate()
