"""The offline tiny LLaVA and the shared loader (training/core/modeling.py).

Pure tests: no database, no network. The model is built once per module.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from training.core.generation import generate_text
from training.core.modeling import LoadedPolicy, ModelLoadError, load_policy
from training.core.tiny_models import build_tiny_llava

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def policy(tiny_policy: LoadedPolicy) -> LoadedPolicy:
    return tiny_policy


def _shape_image(colour: str, shape: str, size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    box = (8, 8, size[0] - 8, size[1] - 8)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return image


def _conversation(image: Image.Image, question: str, answer: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def test_folder_holds_a_complete_checkpoint(tiny_dir: Path) -> None:
    for name in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ]:
        assert (tiny_dir / name).is_file(), name
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "llava"
    assert config["vision_feature_select_strategy"] == "default"
    processor_config = json.loads((tiny_dir / "processor_config.json").read_text())
    assert processor_config["patch_size"] == 8
    assert processor_config["num_additional_image_tokens"] == 1
    assert processor_config["vision_feature_select_strategy"] == "default"


def test_build_is_deterministic_for_a_seed(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_llava(tmp_path / "again", seed=0)
    other = build_tiny_llava(tmp_path / "other", seed=1)
    for name in ["model.safetensors", "tokenizer.json", "config.json"]:
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (
        tiny_dir / "model.safetensors"
    ).read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()


def test_load_policy_loads_the_tiny_model(policy: LoadedPolicy, tiny_dir: Path) -> None:
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    assert isinstance(policy.model, LlavaForConditionalGeneration)
    assert isinstance(policy.processor, LlavaProcessor)
    assert not policy.model.training
    assert policy.device == "cpu"
    assert policy.dtype == "float32"
    assert policy.name == str(tiny_dir)
    assert policy.processor.tokenizer.padding_side == "left"
    tokenizer = policy.processor.tokenizer
    assert tokenizer.image_token == "<image>"
    assert tokenizer.image_token_id == policy.model.config.image_token_id
    assert len(tokenizer) == policy.model.get_input_embeddings().num_embeddings
    params = sum(p.numel() for p in policy.model.parameters())
    assert 100_000 < params < 400_000


def test_chat_template_shapes(policy: LoadedPolicy) -> None:
    processor = policy.processor
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    answer = [{"role": "assistant", "content": [{"type": "text", "text": "The answer is A."}]}]
    rendered_prompt = processor.apply_chat_template(prompt, add_generation_prompt=True)
    full = processor.apply_chat_template(prompt + answer)
    assert rendered_prompt == "USER: <image>\nQ? ASSISTANT:"
    assert full == "USER: <image>\nQ? ASSISTANT: The answer is A.</s>"
    # TRL splits prompt and completion on their common prefix.
    assert full.startswith(rendered_prompt)
    plain = processor.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]
    )
    assert plain == "USER: hi ASSISTANT: yes</s>"


def test_assistant_mask_covers_the_answer(policy: LoadedPolicy) -> None:
    processor = policy.processor
    out = processor.apply_chat_template(
        _conversation(_shape_image("red", "circle"), "What colour?", "The answer is red."),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
    )
    ids = out["input_ids"][0]
    mask = out["assistant_masks"][0].bool()
    assert processor.tokenizer.decode(ids[mask]) == " The answer is red.</s>"


def test_generate_text_batched(policy: LoadedPolicy) -> None:
    images = [_shape_image("red", "circle"), _shape_image("blue", "square", (80, 48))]
    # Different lengths, so the batch really is left-padded.
    questions = ["What colour is the shape?", "How many shapes are there in the image?"]
    batched = generate_text(policy, images, questions, max_new_tokens=6)
    assert len(batched) == 2
    assert all(isinstance(text, str) for text in batched)
    one_by_one = [
        generate_text(policy, [image], [question], max_new_tokens=6)[0]
        for image, question in zip(images, questions, strict=True)
    ]
    assert batched == one_by_one


def test_generate_text_rejects_mismatched_lengths(policy: LoadedPolicy) -> None:
    with pytest.raises(ValueError, match="1 images but 2 questions"):
        generate_text(policy, [_shape_image("red", "circle")], ["a", "b"])


def test_sampling_is_reproducible_with_a_seed(policy: LoadedPolicy) -> None:
    import torch

    images = [_shape_image("green", "circle"), _shape_image("yellow", "square")]
    questions = ["Is there a green circle?", "What shape is it?"]
    kwargs: dict[str, Any] = {
        "max_new_tokens": 12,
        "do_sample": True,
        "temperature": 1.0,
        "seed": 7,
    }
    first = generate_text(policy, images, questions, **kwargs)
    torch.manual_seed(12345)  # the caller's RNG state must not matter
    second = generate_text(policy, images, questions, **kwargs)
    assert first == second
    # With a random model, twelve sampled tokens from another seed differ somewhere.
    others = [
        generate_text(policy, images, questions, **{**kwargs, "seed": seed}) for seed in (8, 9)
    ]
    assert any(other != first for other in others)


def test_image_tokens_match_the_model_and_train(tiny_dir: Path) -> None:
    import torch

    fresh = load_policy(str(tiny_dir), device="cpu")
    model, processor = fresh.model, fresh.processor
    conversations = [
        _conversation(_shape_image("red", "circle"), "What colour?", "red"),
        _conversation(_shape_image("blue", "square", (50, 70)), "What shape is it?", "square"),
    ]
    batch = processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, padding=True, return_tensors="pt"
    )
    image_token_id = model.config.image_token_id
    per_row = (batch["input_ids"] == image_token_id).sum(dim=1).tolist()
    assert per_row == [model.config.image_seq_length] * 2
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    labels[labels == image_token_id] = -100
    model.train()
    out = model(**batch, labels=labels)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    lm_grads = [
        p.grad for n, p in model.named_parameters() if "language_model" in n and p.grad is not None
    ]
    assert lm_grads and any(torch.count_nonzero(g) > 0 for g in lm_grads)
    projector = model.model.multi_modal_projector.linear_1.weight.grad
    assert projector is not None and torch.count_nonzero(projector) > 0


def test_missing_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match=re.escape(str(missing))) as info:
        load_policy(str(missing))
    assert "does not exist" in str(info.value)


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(str(tmp_path))) as info:
        load_policy(str(tmp_path))
    assert "not an image-text-to-text checkpoint" in str(info.value)


def test_non_llava_folder_raises(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match=r"not an image-text-to-text checkpoint.*bert"):
        load_policy(str(tmp_path))


def test_missing_adapter_raises(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="adapter path"):
        load_policy(str(tiny_dir), adapter_path=str(tmp_path / "none"))
    with pytest.raises(ModelLoadError, match=r"no adapter_config\.json"):
        load_policy(str(tiny_dir), adapter_path=str(tmp_path))


def test_hub_id_offline_fails_fast() -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once at import, so test it in a fresh interpreter.
    code = (
        "from training.core.modeling import ModelLoadError, load_policy\n"
        "try:\n"
        "    load_policy('llava-hf/llava-1.5-7b-hf')\n"
        "except ModelLoadError as exc:\n"
        "    print('MODEL_LOAD_ERROR', exc)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    # The timeout is the "quickly": the online path retries for 30-70 s.
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "MODEL_LOAD_ERROR" in result.stdout
    assert "llava-hf/llava-1.5-7b-hf" in result.stdout
    assert "HF_HUB_OFFLINE" in result.stdout


def test_lora_adapter_round_trip(tiny_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_policy(str(tiny_dir), device="cpu")
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        # Language model only: the vision tower has q_proj/v_proj too and must stay frozen.
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
    )
    peft_model = get_peft_model(base.model, config)
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names and all("language_model" in n for n in lora_names)
    torch.manual_seed(0)
    with torch.no_grad():
        # lora_B starts at zero (adapter is a no-op); perturb it so the adapter shows.
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    recorded = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(tiny_dir)

    plain = load_policy(str(tiny_dir), device="cpu")
    adapted = load_policy(str(tiny_dir), adapter_path=str(adapter_dir), device="cpu")
    assert isinstance(adapted.model, PeftModel)
    assert str(adapter_dir) in adapted.name
    # The adapter folder alone is enough: its config names the base.
    by_folder = load_policy(str(adapter_dir), device="cpu")
    assert isinstance(by_folder.model, PeftModel)

    batch = plain.processor.apply_chat_template(
        _conversation(_shape_image("red", "circle"), "What colour?", "red"),
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        base_logits = plain.model(**batch).logits
        adapted_logits = adapted.model(**batch).logits
        folder_logits = by_folder.model(**batch).logits
    assert not torch.allclose(base_logits, adapted_logits)
    assert torch.allclose(adapted_logits, folder_logits)


def test_modeling_imports_without_django_or_torch() -> None:
    code = (
        "import sys, training.core.modeling\n"
        "print(sorted(m for m in ('django', 'torch', 'transformers', 'peft', 'tokenizers')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"
