"""The export core: parquet that `datasets` loads and TRL trains on, the card, NeMo JSONL,
and the readers. Pure tests: no database."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from datasets_app.core.curation.types import ATTRIBUTES, PreferenceRow, SftRow
from datasets_app.core.export import (
    DPO_FEATURES,
    DPO_SCHEMA,
    SFT_FEATURES,
    SFT_SCHEMA,
    ExportItem,
    dataset_card,
    features_to_yaml_list,
    read_dpo_parquet,
    read_sft_parquet,
    write_dpo_parquet,
    write_nemo_jsonl,
    write_sft_parquet,
)

ROOT = Path(__file__).resolve().parent.parent
COLOURS = ["red", "green", "blue", "yellow"]
LABEL = "helpfulness:4,correctness:3,coherence:4,complexity:1,verbosity:2"


def _png(colour: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


IMAGES = {f"prompts/{colour}.png": _png(colour) for colour in COLOURS}


def _scores(base: int) -> dict[str, int]:
    return {name: (base + i) % 5 for i, name in enumerate(ATTRIBUTES)}


def dpo_items(n: int = 6, *, text_only_every: int = 0) -> list[ExportItem]:
    items = []
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        row = PreferenceRow(
            prompt_id=i,
            question=f"What colour is shape {i}?",
            chosen=f"The answer is {colour}.",
            rejected="purple",
            chosen_id=10 * i,
            rejected_id=10 * i + 1,
            chosen_scores=_scores(i),
            rejected_scores=_scores(i + 2) if i % 2 else {},
            margin=2.0 + i,
            rater=f"judge:{i % 3}",
        )
        text_only = text_only_every and i % text_only_every == text_only_every - 1
        items.append(ExportItem(row, None if text_only else f"prompts/{colour}.png"))
    return items


def sft_items(n: int = 6, *, label: str = LABEL) -> list[ExportItem]:
    items = []
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        row = SftRow(
            prompt_id=i,
            question=f"What colour is shape {i}?",
            response=f"The answer is {colour}.",
            completion_id=100 + i,
            scores=_scores(i),
            rater="judge:1",
            label=label,
        )
        items.append(ExportItem(row, f"prompts/{colour}.png"))
    return items


def _load(path: Path, cache: Path):
    import datasets

    return datasets.load_dataset("parquet", data_files=str(path), cache_dir=str(cache))["train"]


def _user(question: str, image: bool = True) -> list[dict]:
    content = [{"type": "image", "text": None}] if image else []
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def _assistant(*texts: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": t} for t in texts]}]


# ---------------------------------------------------------------------------------------
# Parquet files through `datasets`


def test_dpo_file_loads_with_datasets_as_trl_layout(tmp_path):
    path = tmp_path / "train.parquet"
    stats = write_dpo_parquet(path, dpo_items(6, text_only_every=3), IMAGES.__getitem__)
    assert (stats.rows, stats.row_groups) == (6, 1)
    assert stats.bytes_written == path.stat().st_size

    ds = _load(path, tmp_path / "cache")
    assert ds.column_names == list(DPO_FEATURES)
    first = ds[0]
    assert len(first["images"]) == 1
    image = first["images"][0]
    assert isinstance(image, Image.Image) and image.size == (40, 30)
    assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert first["prompt"] == _user("What colour is shape 0?")
    assert first["chosen"] == _assistant("The answer is red.")
    assert first["rejected"] == _assistant("purple")
    assert first["prompt_id"] == 0
    assert first["chosen_scores"] == {k: float(v) for k, v in _scores(0).items()}
    assert first["rejected_scores"] is None
    assert first["margin"] == 2.0 and first["rater"] == "judge:0"
    assert ds[1]["rejected_scores"] == {k: float(v) for k, v in _scores(3).items()}
    # A text-only prompt: no image, no image part.
    assert ds[2]["images"] == []
    assert ds[2]["prompt"] == _user("What colour is shape 2?", image=False)


def test_written_schema_is_exactly_the_declared_one(tmp_path):
    import datasets

    write_dpo_parquet(tmp_path / "d.parquet", dpo_items(2), IMAGES.__getitem__)
    write_sft_parquet(tmp_path / "s.parquet", sft_items(2), IMAGES.__getitem__)
    cases = (("d", DPO_SCHEMA, DPO_FEATURES), ("s", SFT_SCHEMA, SFT_FEATURES))
    for name, schema, features in cases:
        read = pq.ParquetFile(tmp_path / f"{name}.parquet").schema_arrow
        assert read.equals(schema, check_metadata=True)
        meta = json.loads(read.metadata[b"huggingface"])
        hf = datasets.Features.from_dict(meta["info"]["features"])
        # The features JSON is what datasets itself would write for these features.
        assert hf.to_dict() == features
        assert isinstance(hf["images"].feature, datasets.Image)


def test_sft_file_loads_with_datasets(tmp_path):
    path = tmp_path / "sft.parquet"
    write_sft_parquet(path, sft_items(3, label=""), IMAGES.__getitem__)
    ds = _load(path, tmp_path / "cache")
    assert ds.column_names == list(SFT_FEATURES)
    row = ds[1]
    assert isinstance(row["images"][0], Image.Image)
    expected = [*_user("What colour is shape 1?"), *_assistant("The answer is green.")]
    assert row["messages"] == expected
    assert (row["prompt_id"], row["completion_id"], row["rater"], row["label"]) == (
        1,
        101,
        "judge:1",
        "",
    )


def test_steerlm_label_opens_the_assistant_turn(tmp_path):
    write_sft_parquet(tmp_path / "s.parquet", sft_items(2), IMAGES.__getitem__, steerlm=True)
    write_sft_parquet(tmp_path / "plain.parquet", sft_items(2), IMAGES.__getitem__)
    steer = _load(tmp_path / "s.parquet", tmp_path / "c1")[0]
    assert steer["messages"][1] == _assistant(f"{LABEL}\n", "The answer is red.")[0]
    assert steer["label"] == LABEL
    # Without steerlm the label stays a column only.
    plain = _load(tmp_path / "plain.parquet", tmp_path / "c2")[0]
    assert plain["messages"][1] == _assistant("The answer is red.")[0]
    assert plain["label"] == LABEL


def test_same_rows_give_byte_identical_files(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "sub" / "b.parquet"
    b.parent.mkdir()
    write_dpo_parquet(a, dpo_items(40, text_only_every=5), IMAGES.__getitem__, row_group_size=16)
    write_dpo_parquet(b, dpo_items(40, text_only_every=5), IMAGES.__getitem__, row_group_size=16)
    assert a.read_bytes() == b.read_bytes()
    write_sft_parquet(a, sft_items(9), IMAGES.__getitem__, steerlm=True)
    write_sft_parquet(b, sft_items(9), IMAGES.__getitem__, steerlm=True)
    assert a.read_bytes() == b.read_bytes()


def test_failure_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "train.parquet"

    def failing(key: str, calls=[0]) -> bytes:  # noqa: B006  (a counter on purpose)
        calls[0] += 1
        if calls[0] == 500:
            raise OSError("storage went away")
        return IMAGES[key]

    with pytest.raises(OSError, match="storage went away"):
        write_dpo_parquet(path, dpo_items(1000), failing)
    assert list(tmp_path.iterdir()) == []

    # An earlier export at the same path survives a failed re-export untouched.
    write_dpo_parquet(path, dpo_items(3), IMAGES.__getitem__)
    before = path.read_bytes()
    with pytest.raises(KeyError):
        write_dpo_parquet(path, dpo_items(600), lambda key: {}[key])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]


def test_rows_are_streamed_in_row_groups(tmp_path):
    path = tmp_path / "d.parquet"
    items = (item for item in dpo_items(1000))  # a generator: never a list in the writer
    stats = write_dpo_parquet(path, items, IMAGES.__getitem__, row_group_size=256)
    assert stats.rows == 1000
    assert stats.row_groups == math.ceil(1000 / 256) == pq.ParquetFile(path).num_row_groups
    assert [pq.ParquetFile(path).metadata.row_group(i).num_rows for i in range(4)] == [
        256,
        256,
        256,
        232,
    ]
    # Large images close a group early, so memory is bounded in bytes too.
    stats = write_dpo_parquet(
        path, dpo_items(10), IMAGES.__getitem__, row_group_size=256, max_group_bytes=1
    )
    assert stats.row_groups == 10


def test_wrong_row_type_and_unknown_scores_are_refused(tmp_path):
    with pytest.raises(TypeError, match="PreferenceRow"):
        write_dpo_parquet(tmp_path / "x.parquet", sft_items(1), IMAGES.__getitem__)
    bad = ExportItem(PreferenceRow(1, "q", "a", "b", chosen_scores={"wit": 3}), None)
    with pytest.raises(ValueError, match="wit"):
        write_dpo_parquet(tmp_path / "x.parquet", [bad], IMAGES.__getitem__)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# TRL trains on the exported files


def _lora():
    from peft import LoraConfig

    # Language model only: the vision tower and projector stay frozen.
    return LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")


def _common_args(tmp_path) -> dict:
    return dict(
        output_dir=str(tmp_path / "out"),
        max_length=None,
        per_device_train_batch_size=2,
        max_steps=1,
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL defaults bf16 on; CPU runs float32
        logging_steps=1,
        save_strategy="no",
    )


@pytest.mark.slow
def test_dpo_trainer_runs_a_step_on_the_export(tmp_path, tiny_dir):
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from training.core.modeling import load_policy

    path = tmp_path / "train.parquet"
    write_dpo_parquet(path, dpo_items(4), IMAGES.__getitem__)
    dataset = _load(path, tmp_path / "cache")
    policy = load_policy(str(tiny_dir), device="cpu")

    # The image part really becomes image tokens in the prompt (one image per row).
    batch = DataCollatorForVisionPreference(policy.processor)([dict(r) for r in dataset][:2])
    image_id = policy.model.config.image_token_index
    per_row = (batch["input_ids"] == image_id).sum(dim=1)
    assert per_row.tolist() == [per_row[0].item()] * 4 and per_row[0] > 0

    trainer = DPOTrainer(
        model=policy.model,
        args=DPOConfig(**_common_args(tmp_path)),
        train_dataset=dataset,
        processing_class=policy.processor,
        peft_config=_lora(),
    )
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("language_model" in n for n in trainable)
    trainer.train()
    loss = trainer.state.log_history[0]["loss"]
    assert math.isfinite(loss)


@pytest.mark.slow
def test_sft_trainer_runs_a_step_on_the_steerlm_export(tmp_path, tiny_dir):
    from trl import SFTConfig, SFTTrainer

    from training.core.modeling import load_policy

    path = tmp_path / "train.parquet"
    write_sft_parquet(path, sft_items(4), IMAGES.__getitem__, steerlm=True)
    dataset = _load(path, tmp_path / "cache")
    policy = load_policy(str(tiny_dir), device="cpu")

    # The label lands right after "ASSISTANT:", before the response.
    text = policy.processor.apply_chat_template(dataset[0]["messages"], tokenize=False)
    assert text.endswith(f"ASSISTANT: {LABEL}\nThe answer is red.</s>")
    assert "USER: <image>\nWhat colour is shape 0?" in text

    trainer = SFTTrainer(
        model=policy.model,
        args=SFTConfig(**_common_args(tmp_path)),
        train_dataset=dataset,
        processing_class=policy.processor,
        peft_config=_lora(),
    )
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])


# ---------------------------------------------------------------------------------------
# Reader


def test_reader_round_trips_dpo(tmp_path):
    path = tmp_path / "d.parquet"
    items = dpo_items(300, text_only_every=7)
    write_dpo_parquet(path, items, IMAGES.__getitem__, row_group_size=64)
    pairs = list(read_dpo_parquet(path))
    assert len(pairs) == 300
    for item, pair in zip(items, pairs, strict=True):
        row = item.row
        assert (pair.question, pair.chosen) == (row.question, row.chosen)
        assert pair.rejected == row.rejected
        assert pair.images == ((IMAGES[item.image_key],) if item.image_key else ())
        assert pair.extra["prompt_id"] == row.prompt_id
        assert pair.extra["margin"] == row.margin and pair.extra["rater"] == row.rater
    assert pairs[0].extra["chosen_scores"] == {k: float(v) for k, v in _scores(0).items()}


def test_reader_round_trips_sft_and_splits_the_steerlm_label(tmp_path):
    path = tmp_path / "s.parquet"
    write_sft_parquet(path, sft_items(5), IMAGES.__getitem__, steerlm=True)
    examples = list(read_sft_parquet(path))
    assert [e.response for e in examples] == [i.row.response for i in sft_items(5)]
    assert [e.question for e in examples] == [i.row.question for i in sft_items(5)]
    assert {e.label for e in examples} == {LABEL}
    assert examples[2].images == (IMAGES["prompts/blue.png"],)
    assert examples[2].extra["completion_id"] == 102


def test_reader_takes_public_trl_layouts(tmp_path):
    import pyarrow as pa

    # Plain strings and a single `image` column (older TRL examples).
    path = tmp_path / "plain.parquet"
    pq.write_table(
        pa.table(
            {
                "image": [{"bytes": IMAGES["prompts/red.png"], "path": None}],
                "prompt": ["<image>\nWhat is red?"],
                "chosen": ["A square."],
                "rejected": ["Nothing."],
                "source": ["rlaif"],
            }
        ),
        path,
    )
    (pair,) = read_dpo_parquet(path)
    assert (pair.question, pair.chosen, pair.rejected) == ("What is red?", "A square.", "Nothing.")
    assert pair.images == (IMAGES["prompts/red.png"],) and pair.extra == {"source": "rlaif"}

    # Conversational with string content and the prompt repeated in chosen (implicit prompt).
    path = tmp_path / "implicit.parquet"
    user = {"role": "user", "content": "Which shape?"}
    pq.write_table(
        pa.table(
            {
                "images": [[IMAGES["prompts/blue.png"]]],
                "prompt": [[user]],
                "chosen": [[user, {"role": "assistant", "content": "A circle."}]],
                "rejected": [[user, {"role": "assistant", "content": "A star."}]],
            }
        ),
        path,
    )
    (pair,) = read_dpo_parquet(path)
    assert (pair.question, pair.chosen, pair.rejected) == ("Which shape?", "A circle.", "A star.")
    assert pair.images == (IMAGES["prompts/blue.png"],)


def test_reader_names_missing_columns(tmp_path):
    import pyarrow as pa

    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"question": ["q"], "chosen": ["a"]}), path)
    with pytest.raises(ValueError, match=r"missing column\(s\) prompt, rejected"):
        list(read_dpo_parquet(path))
    with pytest.raises(ValueError, match=r"missing column.*messages"):
        list(read_sft_parquet(path))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a readable parquet file"):
        list(read_dpo_parquet(junk))


# ---------------------------------------------------------------------------------------
# Card


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    head, _, body = card[4:].partition("\n---\n")
    assert body.strip()
    return yaml.safe_load(head)


def _card(**overrides) -> str:
    kwargs = dict(
        name="shapes-dpo",
        version=3,
        kind="dpo",
        strategy="best_vs_random_gap",
        params={"gap": 2, "attributes": ["helpfulness", "correctness"], "lr_like": 1e-05},
        rater_selection={"raters": ["judge:3"], "combine": "mean"},
        raters=[
            {"rater": "judge:3", "model": "gemini-2.5-flash", "prompt_version": "helpsteer-v2"}
        ],
        counts={"train": 90, "eval": 10},
        sources=[{"name": "sqa", "format": "scienceqa", "prompts": 100}],
        checksum={"train.parquet": "ab" * 32, "eval.parquet": "cd" * 32},
        features=DPO_FEATURES,
        description="Pairs from the shapes world.",
    )
    kwargs.update(overrides)
    return dataset_card(**kwargs)


def test_card_front_matter_parses_and_lists_splits():
    import datasets

    meta = _front_matter(_card())
    assert meta["license"] == "other"
    assert meta["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "train.parquet"},
                {"split": "eval", "path": "eval.parquet"},
            ],
        }
    ]
    assert meta["dataset_info"]["splits"] == [
        {"name": "train", "num_examples": 90},
        {"name": "eval", "num_examples": 10},
    ]
    # Features in exactly the YAML form `datasets` writes in its own cards.
    expected = datasets.Features.from_dict(DPO_FEATURES)._to_yaml_list()
    assert meta["dataset_info"]["features"] == expected == features_to_yaml_list(DPO_FEATURES)
    studio = meta["preference_studio"]
    assert studio["strategy"] == "best_vs_random_gap"
    assert studio["params"]["lr_like"] == 1e-05
    assert studio["raters"][0]["model"] == "gemini-2.5-flash"
    assert studio["checksum"]["train.parquet"] == "ab" * 32
    sft = _front_matter(_card(kind="steerlm", features=SFT_FEATURES))
    assert (
        sft["dataset_info"]["features"] == datasets.Features.from_dict(SFT_FEATURES)._to_yaml_list()
    )


def test_card_quotes_strings_yaml_would_misread():
    tricky = {
        "no": "yes",
        "colon": "a: b # c",
        "unicode": "Größe \u2028 next\x85line\x7f",
        "number_like": "1e3",
        "empty": "",
        "dash": "- item",
        "null_word": "null",
        "nested": {"list": [1, 2.5, None, True, "on"]},
    }
    meta = _front_matter(_card(params=tricky, name='quote "me" | pipe'))
    assert meta["preference_studio"]["params"] == tricky
    assert meta["preference_studio"]["name"] == 'quote "me" | pipe'


# ---------------------------------------------------------------------------------------
# NeMo-Aligner JSONL


def test_nemo_jsonl_lines_carry_the_label_and_image_path(tmp_path):
    items = sft_items(3)
    items.append(ExportItem(SftRow(9, "Text only?", "Yes.", label=""), None))
    stats = write_nemo_jsonl(tmp_path / "steerlm.jsonl", items, IMAGES.__getitem__)
    assert (stats.rows, stats.images) == (4, 3)
    lines = (tmp_path / "steerlm.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    first = records[0]
    assert first["system"] == "" and first["mask"] == "User" and first["type"] == "VALUE_TO_TEXT"
    assert first["conversations"] == [
        {"from": "User", "value": "What colour is shape 0?", "label": None},
        {"from": "Assistant", "value": "The answer is red.", "label": LABEL},
    ]
    assert first["image"] == "images/red.png"
    assert (tmp_path / first["image"]).read_bytes() == IMAGES["prompts/red.png"]
    assert records[3]["image"] is None and records[3]["conversations"][1]["label"] is None


def test_nemo_failure_leaves_nothing(tmp_path):
    def failing(key: str) -> bytes:
        if key.endswith("blue.png"):
            raise OSError("gone")
        return IMAGES[key]

    with pytest.raises(OSError):
        write_nemo_jsonl(tmp_path / "steerlm.jsonl", sft_items(4), failing)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------------------------------
# Layering


def test_export_core_imports_no_django():
    # Nor the heavy libraries: a web process that exports loads pyarrow only.
    code = (
        "import sys, datasets_app.core.export\n"
        "heavy = ('django', 'torch', 'transformers', 'datasets')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
