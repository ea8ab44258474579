"""The offline tiny vision-language models: random weights, small configs, a byte-level BPE
tokenizer trained here, saved with `save_pretrained`, so that `load_policy` reads them by the
same path as a real checkpoint of their family.

- `llava`: CLIP 32 px + a 2-layer Llama, LLaVA-1.5's layout and chat template; one image is
  16 tokens.
- `qwen2_5_vl`: a 2-block Qwen2.5-VL vision tower with its merger + a 2-layer Qwen2 decoder,
  the real Qwen2.5-VL chat template (TRL ships it, and patches it for assistant-only loss as
  it would a real checkpoint's), and dynamic resolution: an image costs (h/16) x (w/16)
  tokens, 4 to 16 here, so rows of one batch differ in image tokens.

Pure core (no Django). transformers 5.24 cannot build a Qwen2-VL processor without
torchvision (its video processor needs it); `processors.image_only` builds it without the
video half, which is what loading one here does too.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from training.core.modeling import IMAGE_TOKEN_NORM

__all__ = [
    "CHAT_TEMPLATE",
    "TINY_FAMILIES",
    "build_tiny_llava",
    "build_tiny_qwen2_5_vl",
    "build_tiny_vlm",
]

# LLaVA-1.5 layout ("USER: <image>\n{q} ASSISTANT: {a}</s>"). Content may be a plain string
# or a list of {"type": "image"} / {"type": "text"} parts (TRL's conversational layout).
# The generation prompt stops at "ASSISTANT:" and the assistant turn starts with a space,
# so TRL's common-prefix split of prompt / prompt+answer lands exactly on that colon.
# The space and the eos sit inside {% generation %} so that assistant_only_loss masks the
# whole answer token ("Ġanswer" carries the space) and teaches the model to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}"
    "{%- set parts = message['content'] -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{{ '\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'USER: ' }}"
    "{%- for part in parts if part['type'] == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{{ ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT:' }}"
    "{% generation %}"
    "{{ ' ' }}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{{ eos_token }}"
    "{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

_PAD, _BOS, _EOS, _IMAGE = "<pad>", "<s>", "</s>", "<image>"
_IMAGE_SIZE = 32
_PATCH_SIZE = 8
_VOCAB_SIZE = 512


def _corpus() -> list[str]:
    """Sentences in the register of the synthetic "shapes" world and of judge answers.

    Fixed text (no randomness), so the trained tokenizer is identical on every build.
    """
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    shapes = ["circle", "square", "triangle", "star"]
    places = ["left", "right", "top", "bottom", "center", "middle"]
    numbers = ["zero", "one", "two", "three", "four", "five", "six"]
    lines = [
        "The answer is A.",
        "The answer is B.",
        "The answer is C.",
        "The answer is D.",
        "Answer with the option's letter from the given choices directly.",
        "Answer the question using a single word or phrase.",
        "Is there a shape in the image? Please answer yes or no.",
        "Yes, there is. No, there is not.",
        "USER: ASSISTANT: Question: Options: Context: Hint:",
        "What colour is the shape? How many shapes are there? Where is it?",
        "Describe the image in detail. The image shows shapes on a white background.",
        "I think that this is correct because the picture shows it clearly.",
        "helpfulness correctness coherence complexity verbosity",
        "0 1 2 3 4 5 6 7 8 9 10 100 2024",
        ", . ; : ! ? ' \" ( ) [ ] { } - + = / * % & # @ _",
    ]
    for colour, shape in itertools.product(colours, shapes):
        lines.append(f"There is a {colour} {shape}. Is there a {colour} {shape}? yes")
        lines.append(f"The {shape} is {colour}. The {colour} {shape}s are here. no")
    for shape, place in itertools.product(shapes, places):
        lines.append(f"The {shape} is on the {place}. Which shape is at the {place}?")
    for number, shape in itertools.product(numbers, shapes):
        lines.append(f"There are {number} {shape}s in the image.")
    for letter, colour in zip("ABCD", colours, strict=False):
        lines.append(f"({letter}) {colour} {letter}. {colour}")
    # The chat template's own words, often enough that "ASSISTANT:" is a few tokens, not ten.
    for colour, shape in itertools.product(colours, shapes):
        lines.append(f"USER: Is there a {colour} {shape}? ASSISTANT: yes")
        lines.append(f"USER: What colour is the {shape}? ASSISTANT: The answer is {colour}.")
    return lines


def _train_tokenizer(corpus: list[str], special_tokens: list[str], bos: str | None = _BOS) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    # Byte-level: every string is encodable, so no <unk> and no surprise at judge time.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # trim_offsets=False keeps character offsets exact for return_assistant_tokens_mask.
    steps: list[Any] = [processors.ByteLevel(trim_offsets=False)]
    if bos is not None:
        # Llama-style: a BOS in front of each text; no EOS (the chat template writes it).
        bos_id = tok.token_to_id(bos)
        steps.append(
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            )
        )
    tok.post_processor = processors.Sequence(steps)
    return tok


def _image_processor() -> Any:
    kwargs: dict[str, Any] = {
        "size": {"shortest_edge": _IMAGE_SIZE},
        "crop_size": {"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
    }
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # older transformers: the plain class is the PIL one
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor(**kwargs)
    return CLIPImageProcessorPil(**kwargs)


def build_tiny_llava(
    out_dir: str | Path, *, seed: int = 0, normalise_image_tokens: bool = False
) -> Path:
    """Build a random-weight LLaVA (CLIP 32 px + 2-layer Llama) and its processor offline.

    The result is an ordinary `save_pretrained` folder: `load_policy` reads it through the
    same path as a real checkpoint. Deterministic for a given seed.

    `normalise_image_tokens` records `image_token_norm="text_mean"` in the config, and every
    load through `load_policy` then rescales each projected image token to the mean norm of
    the text embeddings (see `attach_image_token_norm`): measured, it is what lets this model
    learn the shapes world (issue 14's ceiling table).
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(_corpus(), [_PAD, _BOS, _EOS, _IMAGE]),
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_PAD,
        # Gives the tokenizer `image_token` / `image_token_id`, which LlavaProcessor reads.
        extra_special_tokens={"image_token": _IMAGE},
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=1024,
    )
    image_token_id = tokenizer.image_token_id
    processor = LlavaProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        patch_size=_PATCH_SIZE,
        # Must agree with the model config, or the image-token count is off by one.
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=CHAT_TEMPLATE,
    )

    vision_config = CLIPVisionConfig(
        image_size=_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=32,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=(_IMAGE_SIZE // _PATCH_SIZE) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )

    if normalise_image_tokens:
        # An unknown config attribute is saved to config.json and read back by from_pretrained.
        config.image_token_norm = IMAGE_TOKEN_NORM

    torch.manual_seed(seed)
    return _save(LlavaForConditionalGeneration(config), processor, out)


def _save(model: Any, processor: Any, out: Path) -> Path:
    """The random model and its processor as a `save_pretrained` folder, generation
    stopping where the tokenizer says."""
    tokenizer = processor.tokenizer
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# --- Qwen2.5-VL ---------------------------------------------------------------------------

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_PATCH = 8  # 14 in the real model; 8 keeps a 32 px image at 4 patches a side
_QWEN_MERGE = 2  # 2 x 2 patches merge into one token, as in the real model
_QWEN_MIN_PIXELS = 32 * 32  # 4 tokens
_QWEN_MAX_PIXELS = 64 * 64  # 16 tokens


def _qwen_corpus() -> list[str]:
    # The chat template's own words (role names, the default system prompt) join the shapes
    # register, so that a turn's frame is a few tokens rather than a spelled-out string.
    frame = [
        "system\nYou are a helpful assistant.",
        "user\nassistant\n",
        "Picture 1: Picture 2: Picture 3:",
    ]
    return _corpus() + frame * 8


def build_tiny_qwen2_5_vl(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build a random-weight Qwen2.5-VL (2 vision blocks + merger, 2-layer Qwen2 decoder,
    multimodal RoPE) and its processor offline, into a `save_pretrained` folder. Its chat
    template is the real model's, so a conversation renders as it would for Qwen2.5-VL-7B."""
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    from training.core.processors import image_only

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(_qwen_corpus(), _QWEN_SPECIALS, bos=None),
        eos_token="<|im_end|>",  # noqa: S106 - token names, not secrets
        pad_token="<|endoftext|>",  # noqa: S106
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        chat_template=qwen2_5_vl_chat_template,
        padding_side="left",
        model_max_length=2048,
    )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=_QWEN_MIN_PIXELS,
        max_pixels=_QWEN_MAX_PIXELS,
        patch_size=_QWEN_PATCH,
        merge_size=_QWEN_MERGE,
        temporal_patch_size=2,
    )
    processor = image_only(Qwen2_5_VLProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=qwen2_5_vl_chat_template,
    )
    head_dim = 16  # hidden 64 / 4 heads; the three mRoPE sections (t, h, w) sum to half of it
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "patch_size": _QWEN_PATCH,
            "spatial_merge_size": _QWEN_MERGE,
            "temporal_patch_size": 2,
            "window_size": 2 * _QWEN_PATCH * _QWEN_MERGE,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16],
            },
            "bos_token_id": None,  # Qwen has no BOS; the default id is past this vocabulary
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        vision_start_token_id=tokenizer.vision_start_token_id,
        vision_end_token_id=tokenizer.vision_end_token_id,
    )
    torch.manual_seed(seed)
    return _save(Qwen2_5_VLForConditionalGeneration(config), processor, out)


TINY_FAMILIES = {"llava": build_tiny_llava, "qwen2_5_vl": build_tiny_qwen2_5_vl}


def build_tiny_vlm(out_dir: str | Path, *, family: str = "llava", seed: int = 0) -> Path:
    """The tiny model of `family` (a TINY_FAMILIES key), built offline into `out_dir`."""
    try:
        build = TINY_FAMILIES[family]
    except KeyError:
        known = ", ".join(TINY_FAMILIES)
        raise ValueError(f"no tiny model for family {family!r}; families: {known}") from None
    return build(out_dir, seed=seed)
