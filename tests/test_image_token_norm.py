"""Image tokens on the scale of text embeddings (issue 14 point 0): the config asks for it,
and every load through the one loader (training, the DPO reference, generation,
evaluation) keeps each projected image token at the mean text-embedding norm."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from PIL import Image

from training.core.modeling import IMAGE_TOKEN_NORM, attach_image_token_norm, load_policy
from training.core.tiny_models import build_tiny_llava


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("norm")
    return {
        "plain": build_tiny_llava(root / "plain", seed=0),
        "normalised": build_tiny_llava(root / "normalised", seed=0, normalise_image_tokens=True),
    }


def _image_token_norms(model, processor) -> torch.Tensor:
    image = Image.new("RGB", (64, 64), "white")
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    captured = []
    projector = next(m for n, m in model.named_modules() if n.endswith("multi_modal_projector"))
    handle = projector.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    with torch.no_grad():
        model.get_image_features(pixel_values=pixels)
    handle.remove()
    return captured[0].reshape(-1, captured[0].shape[-1]).norm(dim=-1)


def _text_norm(model) -> float:
    return float(model.get_input_embeddings().weight.detach().norm(dim=-1).mean())


def test_the_config_records_it_and_the_loader_keeps_image_tokens_at_the_text_norm(folders):
    config = json.loads((folders["normalised"] / "config.json").read_text())
    assert config["image_token_norm"] == IMAGE_TOKEN_NORM
    assert "image_token_norm" not in json.loads((folders["plain"] / "config.json").read_text())

    policy = load_policy(str(folders["normalised"]), device="cpu")
    norms = _image_token_norms(policy.model, policy.processor)
    assert torch.allclose(norms, torch.full_like(norms, _text_norm(policy.model)), rtol=1e-4)

    plain = load_policy(str(folders["plain"]), device="cpu")
    raw = _image_token_norms(plain.model, plain.processor)
    assert not torch.allclose(raw, torch.full_like(raw, _text_norm(plain.model)), rtol=0.1)
    assert attach_image_token_norm(plain.model) is False  # not asked for: nothing attached


def test_the_target_follows_the_embeddings_as_they_train_and_a_copy_uses_its_own(folders):
    policy = load_policy(str(folders["normalised"]), device="cpu")
    model = policy.model
    assert attach_image_token_norm(model) is True  # attaching again changes nothing
    reference = copy.deepcopy(model)  # what TRL makes of a full fine-tune's reference
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(3.0)
    trained = _image_token_norms(model, policy.processor)
    kept = _image_token_norms(reference, policy.processor)
    assert torch.allclose(trained, torch.full_like(trained, _text_norm(model)), rtol=1e-4)
    assert torch.allclose(kept, torch.full_like(kept, _text_norm(reference)), rtol=1e-4)
    assert float(trained.mean()) == pytest.approx(3 * float(kept.mean()), rel=1e-4)
    # The hook's source is not a submodule: the saved weights are the model's own.
    assert not any("_norm_source" in key for key in model.state_dict())
