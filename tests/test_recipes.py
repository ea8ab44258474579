"""Training recipes (training/core/recipes) and the runner (training/run.py) on the tiny LLaVA.

Pure tests: no database. The data is a small "shapes" world written with the export writer:
one big coloured shape per image, the question "What colour is the <kind>?" with the four
colours as options A-D in a fixed order, chosen "The answer is <correct letter>." and
rejected "The answer is <a wrong letter>.". With the options in a fixed order the letter
depends on the image alone, which the tiny model picks up in a few dozen steps; held-out
sets are balanced (every colour and every wrong letter equally often), so that a preference
for some letter over another, learnt without looking at the image, scores exactly 50%.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from datasets_app.core.curation.types import PreferenceRow, SftRow
from datasets_app.core.export.parquet import (
    DPO_FEATURES,
    ExportItem,
    write_dpo_parquet,
    write_sft_parquet,
)
from datasets_app.core.shapes import COLOURS, KINDS, LETTERS, Scene, Shape, draw_scene, png_bytes
from training.core.recipes import DPO_LOSS_TYPES, PRESETS, ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = list(COLOURS)  # red, green, blue, yellow: options A-D, always in this order
LABEL = "helpfulness:4,correctness:4,coherence:4,complexity:1,verbosity:1"


# ---------------------------------------------------------------------------------------
# The shapes fixture


def shapes_items(
    n: int, seed: int, *, kind: str, balanced: bool = False
) -> tuple[list[ExportItem], dict[str, bytes]]:
    """`n` export items of the big-shape colour question, and their images by key."""
    rng = random.Random(seed)
    items, images = [], {}
    for i in range(n):
        colour = OPTIONS[i % 4] if balanced else rng.choice(OPTIONS)
        size = rng.randint(44, 60)  # most of the 64 px image, so most patches see the colour
        half = size // 2
        shape = Shape(
            rng.choice(KINDS),
            colour,
            rng.randint(half, 64 - half),
            rng.randint(half, 64 - half),
            size,
        )
        key = f"shapes/{seed}-{i}.png"
        images[key] = png_bytes(draw_scene(Scene(64, 64, "white", (shape,))))
        options = "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(OPTIONS))
        question = (
            f"What colour is the {shape.kind}?\n{options}\n"
            "Answer with the option's letter from the given choices directly."
        )
        answer = OPTIONS.index(colour)
        wrong = [j for j in range(4) if j != answer]
        rejected = wrong[(i // 4) % 3] if balanced else rng.choice(wrong)
        if kind == "dpo":
            row = PreferenceRow(
                i,
                question,
                f"The answer is {LETTERS[answer]}.",
                f"The answer is {LETTERS[rejected]}.",
            )
        else:
            row = SftRow(
                i,
                question,
                f"The answer is {LETTERS[answer]}.",
                label=LABEL if kind == "steerlm" else "",
            )
        items.append(ExportItem(row, key))
    return items, images


def write_shapes(path: Path, n: int, seed: int, *, kind: str, balanced: bool = False) -> Path:
    items, images = shapes_items(n, seed, kind=kind, balanced=balanced)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dpo":
        write_dpo_parquet(path, items, images.__getitem__)
    else:
        write_sft_parquet(path, items, images.__getitem__, steerlm=kind == "steerlm")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes-data")
    return {
        "dpo": write_shapes(root / "dpo" / "train.parquet", 256, 1, kind="dpo"),
        "dpo_eval": write_shapes(root / "dpo" / "eval.parquet", 60, 2, kind="dpo", balanced=True),
        "sft": write_shapes(root / "sft" / "train.parquet", 256, 3, kind="sft"),
        "sft_eval": write_shapes(root / "sft" / "eval.parquet", 32, 4, kind="sft", balanced=True),
        "steerlm": write_shapes(root / "steerlm" / "train.parquet", 16, 5, kind="steerlm"),
    }


@pytest.fixture(autouse=True)
def _restore_torch_threads(request):
    """Training configs here ask for one CPU thread; give the session its setting back."""
    if request.node.get_closest_marker("slow") is None:
        yield  # fast tests train nothing
        return
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_config(
    tmp_path: Path, tiny_dir: Path, recipe: str, train: Path, **overrides
) -> TrainConfig:
    values = {
        "recipe": recipe,
        "model_path": str(tiny_dir),
        "train_file": str(train),
        "output_dir": str(tmp_path / "out"),
        "dataset_kind": recipe,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 32,
        "logging_steps": 5,
        "save_steps": 0,
        "device": "cpu",
        # One thread: on a small CPU shared with other work, two threads spin-wait and a
        # step of the tiny model runs 20x slower (measured).
        "torch_threads": 1,
        **overrides,
    }
    return TrainConfig.from_dict(values).resolved()


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------
# Config: presets, round trip, validation before any model is loaded


def test_presets_fill_fields_and_explicit_keys_win(tmp_path):
    config = TrainConfig.from_dict(
        {
            "recipe": "dpo",
            "model_path": "m",
            "train_file": "t.parquet",
            "output_dir": "out",
            "preset": "seed001_dpo",
            "learning_rate": 1e-4,
        }
    )
    assert (config.lora_r, config.lora_alpha, config.beta) == (128, 256, 0.1)
    assert (config.gradient_accumulation_steps, config.per_device_train_batch_size) == (4, 8)
    assert (config.lr_scheduler_type, config.warmup_ratio) == ("cosine", 0.003)
    assert config.learning_rate == 1e-4  # the explicit key beats the preset's 5e-5
    assert TrainConfig.from_dict(config.to_dict()) == config
    required = {
        k: config.to_dict()[k] for k in ("recipe", "model_path", "train_file", "output_dir")
    }
    seed003 = TrainConfig.from_dict({**required, "preset": "seed003"})
    assert seed003.eval_fraction == 0.1 and seed003.lora_dropout == 0.1
    assert PRESETS["seed001_sft"]["learning_rate"] == 4e-4
    # The family's language-model projections unless the config names its own.
    from training.core.families import family_for

    assert config.lora_target_modules is None
    llava = family_for("llava")
    assert llava is not None and llava.lora_targets == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    with pytest.raises(ConfigError, match="unknown config keys: lora_rank"):
        TrainConfig.from_dict({**config.to_dict(), "lora_rank": 8})
    with pytest.raises(ConfigError, match="missing config keys: output_dir"):
        TrainConfig.from_dict({"recipe": "sft", "model_path": "m", "train_file": "t"})
    with pytest.raises(ConfigError, match="learning_rate must be float"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rate": "fast"})


@pytest.mark.parametrize(
    ("recipe", "train", "overrides", "message"),
    [
        ("sft", "sft", {"lora_r": 0}, "lora_r must be at least 1"),
        ("sft", "sft", {"learning_rate": -1e-4}, "learning_rate must be positive"),
        ("dpo", "sft", {"dataset_kind": "sft"}, "recipe 'dpo' trains on a 'dpo' dataset"),
        ("dpo", "dpo", {"loss_type": ["sigmoid", "kto"]}, r"unknown DPO loss_type \['kto'\]"),
        ("dpo", "dpo", {"loss_type": ["exo_pair"]}, "exo_pair needs label_smoothing > 0"),
        ("sft", "missing", {}, "train_file .* does not exist"),
        ("sft", "sft", {"model_path": "/nonexistent/llava"}, "model_path .* does not exist"),
        ("ppo", "sft", {"dataset_kind": "sft"}, "unknown recipe 'ppo'"),
    ],
)
def test_bad_configs_are_refused(tmp_path, tiny_dir, data, recipe, train, overrides, message):
    path = data.get(train, tmp_path / "missing.parquet")
    config = make_config(tmp_path, tiny_dir, recipe, path, **overrides)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_validation_loads_no_model_and_the_core_never_imports_django(tmp_path, tiny_dir, data):
    """In a fresh interpreter: a bad config fails with torch not even imported; importing
    every recipe module afterwards pulls in TRL but never Django."""
    bad = make_config(tmp_path, tiny_dir, "sft", data["sft"], lora_r=0).to_dict()
    script = f"""
import json, sys
from training.core.recipes import ConfigError, TrainConfig
try:
    TrainConfig.from_dict(json.loads({json.dumps(json.dumps(bad))})).validate()
except ConfigError as exc:
    print("refused:", exc)
print("torch loaded:", "torch" in sys.modules, "transformers:", "transformers" in sys.modules)
import training.core.recipes.dpo, training.core.recipes.sft, training.core.recipes.ref_logps
import training.run
print("django loaded:", "django" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "refused: lora_r must be at least 1" in result.stdout
    assert "torch loaded: False transformers: False" in result.stdout
    assert "django loaded: False" in result.stdout


def test_loss_types_match_the_installed_trl():
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    names = help_text.split("Possible values are:")[1].split(". If")[0]
    assert {name.strip(" `'") for name in names.split(",")} == set(DPO_LOSS_TYPES)


def test_dataset_kind_comes_from_the_card(tmp_path, tiny_dir, data):
    from datasets_app.core.export.card import dataset_card

    folder = tmp_path / "export"
    folder.mkdir()
    train = folder / "train.parquet"
    train.write_bytes(data["dpo"].read_bytes())
    card = dataset_card(
        name="shapes",
        version=1,
        kind="dpo",
        strategy="oracle",
        params={},
        rater_selection=None,
        raters=[],
        counts={"train": 256},
        sources=["shapes"],
        checksum="ab" * 32,
        features=DPO_FEATURES,
    )
    (folder / "README.md").write_text(card)
    config = make_config(tmp_path, tiny_dir, "dpo", train, dataset_kind=None)  # resolved()
    assert config.dataset_kind == "dpo"
    config.validate()
    with pytest.raises(ConfigError, match=r"'sft' dataset, but .* is a 'dpo' dataset"):
        make_config(tmp_path, tiny_dir, "sft", train, dataset_kind=None).validate()
    with pytest.raises(ConfigError, match="no dataset card"):
        make_config(tmp_path, tiny_dir, "sft", data["sft"], dataset_kind=None).validate()


def test_images_shrink_to_the_pixel_budget():
    from PIL import Image

    from training.core.recipes.common import fit_pixel_budget

    image = Image.new("RGB", (400, 200), "red")
    small = fit_pixel_budget(image, 20_000)
    assert small.size == (200, 100)
    assert fit_pixel_budget(image, None) is image
    assert fit_pixel_budget(image, 80_000) is image


@pytest.mark.slow
def test_max_length_that_would_cut_image_tokens_is_refused(tmp_path, data, tiny_policy):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from training.core.recipes.common import VisionCollator, check_max_length, load_parquet

    dataset = load_parquet(str(data["dpo_eval"]), tmp_path / "cache")
    collator = VisionCollator(DataCollatorForVisionPreference(tiny_policy.processor))
    batch = collator([dataset[0]])
    image_tokens = int((batch["input_ids"][0] == tiny_policy.model.config.image_token_index).sum())
    length = int(batch["attention_mask"].sum(dim=1).max())
    assert 0 < image_tokens < length
    check_max_length(None, dataset, collator)
    check_max_length(length + 8, dataset, collator)
    with pytest.raises(ConfigError, match="max_length 16 would truncate: the longest rows need"):
        check_max_length(16, dataset, collator)


# ---------------------------------------------------------------------------------------
# SFT and SteerLM


@pytest.mark.slow
def test_lora_trains_the_language_model_only(tmp_path, tiny_dir, data):
    import torch

    from training.core.modeling import load_policy
    from training.core.recipes import sft

    config = make_config(tmp_path, tiny_dir, "sft", data["sft"], max_steps=2, logging_steps=1)
    config.validate()
    result = sft.main(config)
    model = result.trainer.model
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("language_model" in n and "lora_" in n for n in trainable)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # zero at init, moved by training

    base = load_policy(str(tiny_dir), device="cpu").model.state_dict()
    trained = {
        name.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for name, p in model.state_dict().items()
        if "lora_" not in name
    }
    vision = [k for k in base if "vision_tower" in k or "multi_modal_projector" in k]
    assert vision and all(torch.equal(trained[k], base[k]) for k in vision)
    assert all(torch.equal(trained[k], base[k]) for k in base if "language_model" in k)
    assert (result.final_dir / "adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_projector_trains_on_request_and_the_vision_tower_stays_frozen(
    tmp_path, tiny_dir, data, finetune
):
    import torch

    from training.core.modeling import load_policy
    from training.core.recipes import sft

    config = make_config(
        tmp_path, tiny_dir, "sft", data["sft"], max_steps=2, finetune=finetune, train_projector=True
    )
    config.validate()
    model = sft.main(config).trainer.model
    base = load_policy(str(tiny_dir), device="cpu").model

    def weights(module_name: str, source) -> dict[str, torch.Tensor]:
        # LoRA keeps a trained copy of a modules_to_save module and the original aside.
        return {
            n.split(module_name, 1)[1].replace("modules_to_save.default.", ""): p
            for n, p in source.named_parameters()
            if module_name in n and "original_module" not in n
        }

    trained_vision, base_vision = weights("vision_tower", model), weights("vision_tower", base)
    assert base_vision and all(torch.equal(trained_vision[k], v) for k, v in base_vision.items())
    assert not any(p.requires_grad for p in trained_vision.values())
    trained_proj, base_proj = (weights("multi_modal_projector", m) for m in (model, base))
    assert base_proj and all(not torch.equal(trained_proj[k], v) for k, v in base_proj.items())


@pytest.mark.slow
def test_sft_lowers_eval_loss_on_the_answer(tmp_path, tiny_dir, data):
    from training.core.recipes import sft

    config = make_config(
        tmp_path,
        tiny_dir,
        "sft",
        data["sft"],
        eval_file=str(data["sft_eval"]),
        learning_rate=5e-3,
        max_steps=30,
        eval_steps=10,
    )
    config.validate()
    result = sft.main(config)
    evals = [h for h in result.trainer.state.log_history if "eval_loss" in h]
    losses = [h["eval_loss"] for h in evals]
    # The loss covers "The answer is X.</s>" only. A random model is near uniform (ln 512 =
    # 6.24); LoRA cannot rescale the tiny random lm_head, so the loss falls slowly while the
    # held-out answer tokens, the letter included, become the model's top choice.
    assert len(losses) == 3 and losses[0] < 6.2 and losses == sorted(losses, reverse=True), losses
    assert evals[-1]["eval_mean_token_accuracy"] > 0.9, evals[-1]


@pytest.mark.slow
def test_steerlm_masks_the_label_and_trains_the_response(tmp_path, tiny_dir, data, tiny_policy):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.core.recipes import sft
    from training.core.recipes.common import load_parquet

    processor = tiny_policy.processor
    rows = list(load_parquet(str(data["steerlm"]), tmp_path / "cache").select(range(3)))
    inner = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
    batch = sft.SteerLMCollator(inner, tokenizer=processor.tokenizer)(rows)
    tokenizer = processor.tokenizer
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        trained = tokenizer.decode(ids[labels != -100])
        assert trained.startswith("The answer is ") and trained.endswith(".</s>"), trained
        assert LABEL in tokenizer.decode(ids)  # still in the input: it conditions the answer
    # Without the masking, TRL's assistant mask trains on the label too.
    plain = inner(rows)
    assert tokenizer.decode(plain["input_ids"][0][plain["labels"][0] != -100]).startswith(
        " helpfulness"
    )

    config = make_config(tmp_path, tiny_dir, "steerlm", data["steerlm"], max_steps=2)
    config.validate()
    assert sft.main(config).global_step == 2


# ---------------------------------------------------------------------------------------
# DPO


@pytest.mark.slow
def test_dpo_learns_to_prefer_the_correct_answer(tmp_path, tiny_dir, data):
    from training.core.recipes import dpo

    config = make_config(
        tmp_path,
        tiny_dir,
        "dpo",
        data["dpo"],
        eval_file=str(data["dpo_eval"]),
        max_steps=30,
        eval_steps=10,
        lr_scheduler_type="cosine",
        warmup_ratio=0.05,
    )
    config.validate()
    result = dpo.main(config)
    metrics = result.eval_metrics
    assert metrics["eval_rewards/accuracies"] > 0.6, metrics
    assert metrics["eval_rewards/margins"] > 0, metrics


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss_type", "first_loss"),
    [
        (["hinge"], 1.0),  # relu(1 - beta * 0): policy = reference at step 1
        (["ipo"], 25.0),  # (0 - 1 / (2 beta))^2 with beta 0.1
        (["sigmoid", "sft"], None),  # combined, with loss_weights
    ],
)
def test_dpo_loss_types_reach_trl(tmp_path, tiny_dir, data, loss_type, first_loss):
    from training.core.recipes import dpo

    weights = [1.0, 0.5] if len(loss_type) == 2 else None
    config = make_config(
        tmp_path,
        tiny_dir,
        "dpo",
        data["dpo"],
        max_steps=2,
        logging_steps=1,
        loss_type=loss_type,
        loss_weights=weights,
    )
    config.validate()
    losses = [h["loss"] for h in dpo.main(config).trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    if first_loss is not None:
        assert losses[0] == pytest.approx(first_loss, rel=1e-5)
    else:  # the SFT term (mean NLL of the chosen tokens, ~6.2 at init) is added at weight 0.5
        assert losses[0] > math.log(2) + 0.5 * 5


@pytest.mark.slow
def test_precomputed_reference_gives_the_on_the_fly_losses(tmp_path, tiny_dir, data):
    import numpy as np

    from training.core.recipes import dpo

    losses, events = {}, []
    for precompute in (False, True, True):
        config = make_config(
            tmp_path / f"run-{len(events)}",
            tiny_dir,
            "dpo",
            data["dpo"],
            max_steps=3,
            logging_steps=1,
            precompute_ref_logps=precompute,
            ref_logps_cache_dir=str(tmp_path / "ref-cache"),
        )
        result = dpo.main(config, report=events.append)
        losses.setdefault(
            precompute, [h["loss"] for h in result.trainer.state.log_history if "loss" in h]
        )
    assert len(losses[True]) == len(losses[False]) == 3
    assert abs(losses[True][0] - losses[False][0]) < 1e-4
    assert np.allclose(losses[True], losses[False], atol=1e-4), losses
    # Computed once, then read back from the cache keyed by data checksum and reference.
    assert [e["cached"] for e in events] == [False, True]
    assert events[0]["rows"] == 256 and Path(events[0]["path"]).is_file()


# ---------------------------------------------------------------------------------------
# The runner


def write_config(path: Path, config: TrainConfig) -> Path:
    path.write_text(json.dumps(config.to_dict()))
    return path


@pytest.mark.slow
def test_runner_writes_metrics_heartbeats_and_the_final_adapter(tmp_path, tiny_dir, data):
    from training.core.modeling import load_policy

    config = make_config(
        tmp_path,
        tiny_dir,
        "dpo",
        data["dpo"],
        eval_file=str(data["dpo_eval"]),
        max_steps=4,
        logging_steps=1,
        eval_steps=2,
        heartbeat_s=0.2,
        merge_adapter=True,
    )
    cfg = write_config(tmp_path / "cfg.json", config)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "training.run", str(cfg)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = Path(config.output_dir)
    records = read_metrics(out)
    events = [r["event"] for r in records]
    assert events[0] == "started" and events[-1] == "finished"
    assert events.count("heartbeat") >= 2
    train = [r for r in records if r["event"] == "metrics" and "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for key in (
        "epoch",
        "learning_rate",
        "tokens_per_s",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
    ):
        assert all(isinstance(r[key], int | float) for r in train), key
    evals = [r for r in records if r["event"] == "metrics" and "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all("eval_rewards/accuracies" in r for r in evals)
    (ref,) = [r for r in records if r["event"] == "ref_logps" and r["split"] == "train"]
    assert ref["rows"] == 256
    finished = records[-1]
    assert finished["step"] == 4 and "eval_rewards/margins" in finished["eval"]

    final = out / "final"
    for name in ("adapter_config.json", "adapter_model.safetensors", "processor_config.json"):
        assert (final / name).is_file(), name
    assert json.loads((final / "train_config.json").read_text()) == config.to_dict()
    adapted = load_policy(str(final), device="cpu")  # the adapter on the base it records
    assert adapted.name.endswith(str(final))
    assert load_policy(str(final / "merged"), device="cpu").model is not None


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_dir, data):
    from training import run

    first = make_config(
        tmp_path, tiny_dir, "sft", data["sft"], max_steps=4, save_steps=2, logging_steps=1
    )
    assert run.main([str(write_config(tmp_path / "a.json", first))]) == 0
    out = Path(first.output_dir)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    saved = json.loads((out / "checkpoint-4" / "train_config.json").read_text())
    assert saved == first.to_dict()  # checkpoints carry their config

    second = replace(first, max_steps=8, resume=True)
    assert run.main([str(write_config(tmp_path / "b.json", second))]) == 0
    records = read_metrics(out)
    starts = [i for i, r in enumerate(records) if r["event"] == "started"]
    assert len(starts) == 2
    resumed = records[starts[1] :]
    assert resumed[0]["resumed_from"] == str(out / "checkpoint-4")
    steps = [r["step"] for r in resumed if r["event"] == "metrics" and "loss" in r]
    assert steps == [5, 6, 7, 8]  # the global step goes on from the checkpoint, not from 0
    assert resumed[-1]["event"] == "finished" and resumed[-1]["step"] == 8

    # A resumed run must train the same thing, and a fresh one needs a fresh folder.
    third = replace(second, learning_rate=5e-4)
    assert run.main([str(write_config(tmp_path / "c.json", third))]) == run.EXIT_BAD_CONFIG
    failed = read_metrics(out)[-1]
    assert failed["event"] == "failed" and "learning_rate changed" in failed["error"]
    assert run.main([str(write_config(tmp_path / "d.json", first))]) == run.EXIT_BAD_CONFIG
    assert "holds an earlier run" in read_metrics(out)[-1]["error"]


def test_runner_exits_non_zero_with_a_failed_event_on_a_bad_config(tmp_path, tiny_dir, data):
    config = make_config(tmp_path, tiny_dir, "dpo", data["dpo"], loss_type=["sigmoid", "nope"])
    cfg = write_config(tmp_path / "bad.json", config)
    result = subprocess.run(
        [sys.executable, "-m", "training.run", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    (failed,) = read_metrics(Path(config.output_dir))
    assert failed["event"] == "failed" and "unknown DPO loss_type ['nope']" in failed["error"]
    assert math.isfinite(failed["time"]) and "loss_type" in result.stderr

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "training.run", str(garbage)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "cannot read config" in result.stderr


@pytest.mark.slow
def test_a_stopped_run_reports_failed(tmp_path, tiny_dir, data):
    import time

    config = make_config(tmp_path, tiny_dir, "dpo", data["dpo"], num_train_epochs=50.0)
    cfg = write_config(tmp_path / "long.json", config)
    process = subprocess.Popen(
        [sys.executable, "-m", "training.run", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = Path(config.output_dir) / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while '"metrics"' not in (metrics.read_text() if metrics.exists() else ""):  # training
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    process.terminate()  # SIGTERM, as the job supervisor stops a job
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr[-2000:]
    failed = read_metrics(Path(config.output_dir))[-1]
    assert failed["event"] == "failed" and "Terminated: stopped by signal" in failed["error"]


def test_a_checkpoint_whose_state_was_cut_by_a_kill_is_not_resumed_from(tmp_path):
    """A worker killed while Trainer writes checkpoint-N leaves trainer_state.json empty or
    cut; resuming from it failed with a JSONDecodeError (seen in CI). The one before wins."""
    from training.core.recipes.config import last_checkpoint

    for step, state in ((4, '{"global_step": 4}'), (8, ""), (12, '{"global_st')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-16").mkdir()  # no state at all
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8}')
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
