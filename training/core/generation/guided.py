"""Generation with the image partly hidden, continuing given prefixes: what BDHS's tries
need (seed 002, section 3.4; `bdhs.py` is the algorithm).

- `mask_image_attention`: each image token's attention-mask entry set to 0 with probability
  rho (seeded), so the model attends to a random subset of the image.
- `noisy_image`: the image after t steps of the forward diffusion (Appendix E.1's variant).
- `continue_batch`: for one prompt, one batch continuing every prefix of a try, the answer
  opening with the prefix (`chat_text(prefill=...)`).

Attention masking holes the prompt's attention mask; position ids follow the mask's
cumulative sum, as for left padding. Families whose position ids are laid out from the
image grid (Qwen2-VL's multimodal RoPE reads the mask to find the image tokens) cannot take
holes there: they are refused, and the noisy-image variant serves them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from training.core.generation.core import (
    GenerationError,
    GenerationRequest,
    chat_text,
    clean_text,
    generate_kwargs,
)
from training.core.generation.sampling import SamplingParams, row_seed
from training.core.modeling import encode_prompts

if TYPE_CHECKING:
    from PIL import Image

    from training.core.modeling import LoadedPolicy

__all__ = ["continue_batch", "image_token_id", "mask_image_attention", "noisy_image"]

# Families whose positions come from the image grid: a hole among the image tokens would
# shift the grid (transformers' get_rope_index filters the tokens by the attention mask).
_GRID_POSITIONS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def image_token_id(processor: Any) -> int:
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = getattr(processor.tokenizer, "image_token_id", None)
    if token_id is None:
        raise GenerationError("the processor names no image token: cannot mask the image")
    return int(token_id)


def mask_image_attention(
    input_ids: Any, attention_mask: Any, token_id: int, rho: float, seed: int
) -> Any:
    """`attention_mask` with each image token's entry zeroed with probability `rho`."""
    import torch

    if rho <= 0:
        return attention_mask
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
    hidden = (input_ids == token_id) & (draws < rho)
    return attention_mask.masked_fill(hidden, 0)


def noisy_image(image: Image.Image, *, steps: int = 500, seed: int = 0) -> Image.Image:
    """The image after `steps` of DDPM's forward process (linear betas 1e-4..0.02 over
    1,000 steps): sqrt(a) x + sqrt(1 - a) eps, with a the cumulative product of 1 - beta."""
    import numpy as np
    from PIL import Image as PILImage

    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = float(np.prod(1.0 - betas[: max(0, min(steps, 1000))]))
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 127.5 - 1.0
    rng = np.random.default_rng(seed)
    noised = np.sqrt(alpha_bar) * pixels + np.sqrt(1 - alpha_bar) * rng.standard_normal(
        pixels.shape
    )
    out = ((np.clip(noised, -1, 1) + 1.0) * 127.5).round().astype(np.uint8)
    return PILImage.fromarray(out, "RGB")


def continue_batch(
    policy: LoadedPolicy,
    request: GenerationRequest,
    prefixes: Sequence[str],
    *,
    params: SamplingParams,
    rho: float = 0.0,
    noise_steps: int = 0,
    attempt: int = 0,
) -> list[str]:
    """What the model writes after each prefix of the answer to `request`, in one batch,
    seeded by (params.seed, request key, attempt, prefix index); with `rho` the image
    tokens' attention is masked at random, with `noise_steps` the images are noised."""
    import torch

    if not prefixes:
        return []
    model_type = str(getattr(policy.model.config, "model_type", ""))
    if rho > 0 and model_type in _GRID_POSITIONS:
        raise GenerationError(
            f"{model_type} lays its positions out from the image grid: image-token attention "
            "cannot be masked there; use the noisy-image variant"
        )
    key = f"{request.key}:{attempt}"
    images = request.images
    if noise_steps and images:
        images = [
            noisy_image(im, steps=noise_steps, seed=_seed(key, n)) for n, im in enumerate(images)
        ]
    # Without its trailing space: byte-level tokenizers carry the space on the next word
    # ("Ġred"), so the model writes it, as in training.
    texts = [chat_text(policy.processor, request, params, prefill=p.rstrip()) for p in prefixes]
    inputs = encode_prompts(policy, texts, images * len(prefixes) or None)
    if rho > 0 and images:
        inputs["attention_mask"] = mask_image_attention(
            inputs["input_ids"],
            inputs["attention_mask"],
            image_token_id(policy.processor),
            rho,
            _seed(key, -1),
        )
    seeds = [row_seed(params.seed, key, j) for j in range(len(prefixes))]
    kwargs = generate_kwargs(policy, params, seeds)
    with torch.inference_mode():
        output = policy.model.generate(**inputs, **kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    decoded = policy.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [clean_text(text) for text in decoded]


def _seed(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}:{n}".encode()).digest()[:4], "big")
