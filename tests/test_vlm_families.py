"""Families beyond LLaVA-1.5 (issue 15): the tiny LLaVA and the tiny Qwen2.5-VL both go
through the one loader, generation, SFT, DPO with precomputed reference log-probs and
ScienceQA evaluation; a hub id of each family loads by the same path from a local cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.test_recipes import make_config, write_shapes
from training.core import families
from training.core.families import family_for, family_from_modules
from training.core.modeling import ModelLoadError, check_policy, load_policy

ROOT = Path(__file__).resolve().parent.parent


def test_each_family_knows_where_its_vision_tower_projector_and_language_model_are():
    qwen, llava, idefics = (family_for(t) for t in ("qwen2_5_vl", "llava_onevision", "smolvlm"))
    assert qwen is not None and llava is not None and idefics is not None
    # Qwen's merger (the projector) sits inside its vision tower: it is the projector.
    assert qwen.part("model.visual.merger.mlp.0.weight") == families.PROJECTOR
    assert qwen.part("model.visual.blocks.0.attn.qkv.weight") == families.VISION
    assert qwen.part("model.language_model.layers.0.self_attn.q_proj.weight") == families.LANGUAGE
    assert qwen.part("lm_head.weight") is None
    assert llava.part("model.multi_modal_projector.linear_1.weight") == families.PROJECTOR
    assert idefics.part("model.text_model.layers.1.mlp.up_proj.weight") == families.LANGUAGE
    # A model type not listed, with a known layout, is recognised by its modules.
    names = ["model.vision_tower.x", "model.multi_modal_projector.y", "model.language_model.z"]
    assert family_from_modules("llava_future", names).name == "llava"
    with pytest.raises(families.UnknownLayout, match="vision tower cannot be told"):
        family_from_modules("mystery", ["encoder.layer", "decoder.layer"])
    # The LoRA regex matches the language model's projections, never the vision side.
    import re

    pattern = re.compile(families.language_model_targets(qwen, ["q_proj", "down_proj"]))
    assert pattern.fullmatch("model.language_model.layers.0.self_attn.q_proj")
    assert not pattern.fullmatch("model.visual.blocks.0.mlp.down_proj")


def test_the_loader_takes_any_image_text_to_text_checkpoint_and_its_own_processor(
    tiny_qwen_dir, tiny_dir, tmp_path
):
    qwen = load_policy(str(tiny_qwen_dir), device="cpu")
    assert type(qwen.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(qwen.processor).__name__ == "Qwen2_5_VLProcessor"
    assert check_policy(str(tiny_qwen_dir)).model_type == "qwen2_5_vl"
    content = [{"type": "image"}, {"type": "text", "text": "Hi"}]
    conversation = [{"role": "user", "content": content}]
    text = qwen.processor.apply_chat_template(conversation, add_generation_prompt=True)
    # The real Qwen2.5-VL template: default system turn, vision markers, im_start frames.
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>" in text
    # Dynamic resolution: the processor, not a constant, says how many tokens an image costs.
    counts = {}
    for size in ((32, 32), (64, 64), (64, 32)):
        ids = qwen.processor(text=[text], images=[Image.new("RGB", size)])["input_ids"][0]
        counts[size] = sum(1 for t in ids if t == qwen.processor.image_token_id)
    assert counts == {(32, 32): 4, (64, 64): 16, (64, 32): 8}
    llava = load_policy(str(tiny_dir), device="cpu")
    assert type(llava.model).__name__ == "LlavaForConditionalGeneration"
    # A text-only model is refused by name, before any weight is read.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match=r"not an image-text-to-text checkpoint.*llama"):
        check_policy(str(tmp_path))


def test_generation_counts_each_images_tokens_as_the_processor_expands_them(tiny_family_dir):
    from training.core.generation.core import GenerationRequest, TransformersBackend
    from training.core.generation.sampling import SamplingParams
    from training.core.generation.templates import PromptInput

    policy = load_policy(str(tiny_family_dir), device="cpu")
    backend = TransformersBackend(policy)
    params = SamplingParams(k=3, temperature=0.7, top_p=1.0, max_new_tokens=4, seed=0)
    requests = [
        GenerationRequest(f"r{i}", PromptInput("Is there a red circle?"), Image.new("RGB", size))
        for i, size in enumerate([(64, 64), (32, 32), (80, 40)])
    ]
    for request in requests:
        text = backend._text(request, params)
        exact = policy.processor(text=[text], images=[request.image], add_special_tokens=False)
        assert backend.prompt_tokens(request, params) == len(exact["input_ids"][0])
    text_only = GenerationRequest("t", PromptInput("Say something."), None)
    samples = backend.generate([*requests, text_only], params)
    assert [s.key for s in samples] == ["r0", "r1", "r2", "t"]
    assert all(len(s.texts) == 3 and all(0 < n <= 4 for n in s.token_counts) for s in samples)
    again = backend.generate([*requests, text_only], params)
    assert [s.texts for s in again] == [s.texts for s in samples]  # seeded per row


@pytest.mark.slow
def test_sft_with_lora_adapts_the_language_model_only_in_each_family(
    tmp_path, tiny_family_dir, tiny_dir
):
    import torch

    from training.core.generation import generate_text
    from training.core.recipes import sft

    train = write_shapes(tmp_path / "sft.parquet", 16, 3, kind="sft")
    config = make_config(tmp_path, tiny_family_dir, "sft", train, max_steps=2, logging_steps=1)
    config.validate()
    result = sft.main(config)
    model = result.trainer.model
    family = families.family_from_modules(model.config.model_type, [])
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(f".{family.language}." in n and "lora_" in n for n in trainable), (
        trainable
    )
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # zero at init, moved by training
    base = load_policy(str(tiny_family_dir), device="cpu").model.state_dict()
    trained = {
        name.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for name, p in model.state_dict().items()
        if "lora_" not in name
    }
    vision = [k for k in base if family.part(k) in (families.VISION, families.PROJECTOR)]
    assert vision and all(torch.equal(trained[k], base[k]) for k in vision)
    # The saved adapter loads on its base through the same loader, and answers.
    policy = load_policy(str(result.final_dir), device="cpu")
    assert generate_text(policy, [Image.new("RGB", (64, 64), "red")], ["Colour?"], max_new_tokens=3)


@pytest.mark.slow
def test_dpo_with_precomputed_reference_logps_matches_the_live_reference_in_each_family(
    tmp_path, tiny_family_dir
):
    import numpy as np

    from training.core.recipes import dpo

    train = write_shapes(tmp_path / "dpo.parquet", 16, 1, kind="dpo")
    losses, events = {}, []
    for precompute in (False, True):
        config = make_config(
            tmp_path / f"run-{precompute}",
            tiny_family_dir,
            "dpo",
            train,
            max_steps=2,
            logging_steps=1,
            precompute_ref_logps=precompute,
            ref_logps_cache_dir=str(tmp_path / "ref-cache"),
        )
        result = dpo.main(config, report=events.append)
        losses[precompute] = [h["loss"] for h in result.trainer.state.log_history if "loss" in h]
    assert len(losses[True]) == len(losses[False]) == 2
    # Our reference pass (the collator TRL trains with) gives TRL's own reference log-probs.
    assert np.allclose(losses[True], losses[False], atol=1e-4), losses
    assert [e["rows"] for e in events] == [16]


def test_mdpo_scores_the_corrupted_chosen_half_as_the_reference_pass_does_in_each_family(
    tmp_path, tiny_family_dir
):
    """The training batch keeps only the chosen half of the corrupted pairs (images too:
    Qwen's pixel rows follow its image grid); its log-probs equal the reference pass's."""
    import math

    import torch

    from training.core.recipes import mdpo
    from training.core.recipes.common import load_parquet
    from training.core.recipes.ref_logps import compute_ref_logps, sequence_logps

    train = write_shapes(tmp_path / "dpo.parquet", 6, 1, kind="dpo")
    config = make_config(tmp_path, tiny_family_dir, "mdpo", train, dataset_kind="dpo")
    policy = load_policy(str(tiny_family_dir), device="cpu")
    rows = mdpo.add_corrupted_images(load_parquet(str(train), tmp_path / "c"), "crop", 0)
    expected, _ = compute_ref_logps(
        policy.model, policy.processor, rows.map(mdpo.with_corrupted_chosen), batch_size=6
    )
    batch = mdpo.MdpoCollator(policy.processor, config, ())(list(rows))
    cond = {k.removeprefix("cond_"): v for k, v in batch.items() if k.startswith("cond_")}
    assert cond["input_ids"].shape[0] == 6
    with torch.no_grad():
        got = sequence_logps(policy.model.eval(), cond)
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-4)
    result = mdpo.main(
        make_config(
            tmp_path / "run",
            tiny_family_dir,
            "mdpo",
            train,
            max_steps=1,
            logging_steps=1,
            dataset_kind="dpo",
        )
    )
    first = next(h["loss"] for h in result.trainer.state.log_history if "loss" in h)
    assert first == pytest.approx(3 * math.log(2), abs=1e-3)


@pytest.mark.slow
def test_scienceqa_evaluation_runs_on_each_family(tmp_path, tiny_family_dir):
    from datasets_app.core.shapes import make_shapes
    from training.core.evaluation.data import load_items
    from training.core.evaluation.runner import evaluate, transformers_generate

    make_shapes(tmp_path / "shapes", n=8, seed=2)
    items = load_items("scienceqa", tmp_path / "shapes" / "scienceqa.parquet", limit=8)
    policy = load_policy(str(tiny_family_dir), device="cpu")
    generate = transformers_generate(
        policy, temperature=0.0, max_new_tokens=4, token_budget=4096, seed=0
    )
    result = evaluate("scienceqa", items, generate=generate)
    assert len(result.records) == len(items) == 8
    assert result.metrics["n"] == 8 and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert all(r["answers"] and r["prompt"] for r in result.records)


_HUB_LOAD = """
import json, sys
from PIL import Image
from training.core.generation import generate_text
from training.core.modeling import check_policy, load_policy
check = check_policy(sys.argv[1])
policy = load_policy(sys.argv[1], device="cpu")
answer = generate_text(policy, [Image.new("RGB", (64, 64))], ["Colour?"], max_new_tokens=2)
print(json.dumps({"local": check.is_local, "model_type": check.model_type,
                  "processor": type(policy.processor).__name__, "answers": len(answer)}))
"""


@pytest.mark.parametrize(
    ("hub_id", "model_type", "processor"),
    [
        ("llava-hf/llava-1.5-7b-hf", "llava", "LlavaProcessor"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", "Qwen2_5_VLProcessor"),
    ],
)
def test_a_hub_id_of_each_family_loads_from_the_cache_by_the_same_path(
    tmp_path, tiny_dir, tiny_qwen_dir, hub_id, model_type, processor
):
    """The hub cannot be reached here: a tiny model of the same class is laid out as the
    hub's cache would hold `hub_id` (models--owner--name/snapshots/<commit>, refs/main), and
    HF_HUB_OFFLINE=1 loads it as the hub id, not as a folder."""
    folder = tiny_qwen_dir if model_type == "qwen2_5_vl" else tiny_dir
    commit = "0" * 40
    repo = tmp_path / "hub" / f"models--{hub_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _HUB_LOAD, hub_id],
        cwd=tmp_path,  # no folder named like the hub id here
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "local": False,
        "model_type": model_type,
        "processor": processor,
        "answers": 1,
    }


@pytest.mark.slow
def test_steerlm_masks_its_label_in_each_family(tmp_path, tiny_family_dir):
    from training.core.recipes import sft

    train = write_shapes(tmp_path / "steerlm.parquet", 8, 5, kind="steerlm")
    config = make_config(tmp_path, tiny_family_dir, "steerlm", train, max_steps=1)
    config.validate()
    result = sft.main(config)
    collator = result.trainer.data_collator
    batch = collator([result.trainer.train_dataset[0]])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    trained = result.trainer.processing_class.tokenizer.decode(ids[labels != -100])
    # The answer (and the end of the turn) is trained; the attribute label is not.
    assert "The answer is" in trained and "helpfulness" not in trained, trained


def test_the_local_judge_reads_a_conversation_with_every_image_in_each_family(tiny_family_dir):
    import io

    from annotation.core.judges.base import JudgeItem
    from annotation.core.judges.local_judge import LocalJudge
    from annotation.core.judges.prompt import render_judge_prompt

    def png(colour: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
        return buffer.getvalue()

    turns = (
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Shape?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A circle."}]},
    )
    item = JudgeItem(
        key="k",
        question="And this one?",
        completions=("A square.",),
        image=png("red"),
        more_images=((png("blue"), "image/png"),),
        turns=turns,
    )
    judge = LocalJudge(model=str(tiny_family_dir), max_new_tokens=3)
    prompt = render_judge_prompt(item)
    text, usage = judge._generate(prompt, [data for data, _ in item.images])
    policy = load_policy(str(tiny_family_dir), device="cpu")
    from training.core.generation.core import GenerationRequest, chat_text
    from training.core.generation.sampling import SamplingParams
    from training.core.generation.templates import PromptInput

    pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data, _ in item.images]
    request = GenerationRequest("judge", PromptInput(prompt), pictures[0], (pictures[1],))
    chat = chat_text(policy.processor, request, SamplingParams(k=1, temperature=0.0))
    exact = policy.processor(text=[chat], images=pictures, add_special_tokens=False)
    # What the judge counted is what the processor makes of the prompt with both images.
    assert usage.input_tokens == len(exact["input_ids"][0])
    assert 1 <= usage.output_tokens <= 3 and isinstance(text, str)


def test_the_family_table_matches_the_installed_classes_of_five_more_families():
    """Random tiny models of the real transformers classes (no weights, no processor):
    every parameter but the LM head falls in a part, and LoRA's regex reaches only the
    language model."""
    import re

    from transformers import (
        AutoModelForImageTextToText,
        Idefics3Config,
        LlavaNextConfig,
        LlavaOnevisionConfig,
        Qwen2VLConfig,
        SmolVLMConfig,
    )

    from training.core.recipes.common import model_family

    text = {
        "vocab_size": 128,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    configs = {
        "llava": LlavaOnevisionConfig(
            text_config={"model_type": "qwen2", **text},
            vision_config={"model_type": "siglip_vision_model", **vision},
        ),
        "llava ": LlavaNextConfig(
            text_config={"model_type": "llama", **text},
            vision_config={"model_type": "clip_vision_model", "projection_dim": 32, **vision},
        ),
        "idefics3": Idefics3Config(
            text_config={"model_type": "llama", **text}, vision_config=vision
        ),
        "idefics3 ": SmolVLMConfig(
            text_config={"model_type": "llama", **text}, vision_config=vision
        ),
        "qwen2_vl": Qwen2VLConfig(
            text_config={
                **text,
                "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
            },
            vision_config={
                "depth": 1,
                "embed_dim": 32,
                "hidden_size": 32,
                "num_heads": 2,
                "patch_size": 8,
            },
        ),
    }
    for expected, config in configs.items():
        model = AutoModelForImageTextToText.from_config(config)
        family = model_family(model)
        assert family.name == expected.strip(), config.model_type
        unplaced = [n for n, _ in model.named_parameters() if family.part(n) is None]
        assert unplaced == ["lm_head.weight"], (config.model_type, unplaced)
        pattern = re.compile(families.language_model_targets(family, family.lora_targets))
        adapted = [n for n, _ in model.named_modules() if pattern.fullmatch(n)]
        assert adapted and all(family.part(n) == families.LANGUAGE for n in adapted)
