"""The offline tiny LLaVA and the one loader every policy goes through.

Pure core: no Django import here (a test checks it), and the heavy libraries (torch,
transformers, peft, tokenizers) are imported inside the functions so that importing this
module from a web process or a management command costs nothing.

Checked against the installed versions (transformers 5.24, tokenizers 0.23, peft 0.21,
torch 2.13 CPU); where REFERENCE.md ("The stack on this kind of machine") differs:
- `CLIPImageProcessor` is the torchvision backend in transformers 5.24; without torchvision
  constructing it falls back to `CLIPImageProcessorPil` with a warning. We build the PIL
  class directly; it is saved as "CLIPImageProcessor" all the same, so `AutoProcessor`
  picks whichever backend the loading machine has, silently.
- `PreTrainedTokenizerFast` is now an alias of `TokenizersBackend`; the
  `extra_special_tokens={"image_token": ...}` argument still gives the tokenizer
  `image_token` / `image_token_id`, as REFERENCE says.
- `from_pretrained(torch_dtype=...)` is deprecated in favour of `dtype=...`.
- REFERENCE lists transformers 5.23; 5.24 is installed. No other fact turned out wrong.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "CHAT_TEMPLATE",
    "LoadedPolicy",
    "ModelLoadError",
    "PolicyCheck",
    "attach_image_token_norm",
    "build_tiny_llava",
    "check_policy",
    "load_policy",
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

# A hub id is "name" or "owner/name"; anything else that does not exist is a bad path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelLoadError(ValueError):
    """A checkpoint could not be loaded; the message names the path and the reason."""


@dataclass
class LoadedPolicy:
    model: Any
    processor: Any
    device: str
    dtype: str
    name: str


# ---------------------------------------------------------------------------------------
# Building the tiny model


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


def _train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    # Byte-level: every string is encodable, so no <unk> and no surprise at judge time.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[_PAD, _BOS, _EOS, _IMAGE],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos_id = tok.token_to_id(_BOS)
    # Llama-style: a BOS in front of each text; no EOS (the chat template writes it).
    # trim_offsets=False keeps character offsets exact for return_assistant_tokens_mask.
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{_BOS} $A", pair=f"{_BOS} $A {_BOS} $B", special_tokens=[(_BOS, bos_id)]
            ),
        ]
    )
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
        tokenizer_object=_train_tokenizer(),
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
    model = LlavaForConditionalGeneration(config)
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    model.eval()

    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


IMAGE_TOKEN_NORM = "text_mean"  # noqa: S105 - a mode name, not a secret


def attach_image_token_norm(model: Any) -> bool:
    """Rescale each projected image token to the current mean norm of the text embeddings,
    when the model's config asks for it (`image_token_norm="text_mean"`); True if attached.

    Why: the tiny model's projector output grows in training to 13-30 times the norm of a
    text embedding (measured: 0.09 at the start, 2-5 after 3,000 steps, against 0.16), and
    the model stops seeing the image. Scaling the weights once does not hold; a forward hook
    does, and it travels with the config, so training, the DPO reference, generation and
    evaluation all see the same model. Idempotent.
    """
    config = getattr(model, "config", None)
    if getattr(config, "image_token_norm", None) != IMAGE_TOKEN_NORM:
        return False
    if getattr(model, "_image_token_norm_hook", None) is not None:
        return True
    projector = None
    for name, module in model.named_modules():
        if name.endswith("multi_modal_projector"):
            projector = module
            break
    if projector is None:
        raise ModelLoadError("image_token_norm is set but the model has no multi_modal_projector")
    # A plain attribute, not a submodule (that would add the embeddings to the projector's
    # state dict); deepcopy (TRL's reference model) maps it to the copy's own embeddings.
    object.__setattr__(projector, "_norm_source", model.get_input_embeddings())
    model._image_token_norm_hook = projector.register_forward_hook(_rescale_to_text_norm)
    return True


def _rescale_to_text_norm(module: Any, inputs: Any, output: Any) -> Any:
    target = module._norm_source.weight.detach().norm(dim=-1).mean()
    return output * (target / output.norm(dim=-1, keepdim=True).clamp_min(1e-6))


# ---------------------------------------------------------------------------------------
# Loading


def _looks_like_hub_id(name: str) -> bool:
    return (
        not os.path.isabs(name)
        and not name.startswith((".", "~"))
        and _HUB_ID.match(name) is not None
    )


def _resolve_dtype(dtype: str | None, device: str) -> tuple[Any, str]:
    import torch

    if dtype is None:
        # bf16 halves memory on a GPU; CPU kernels for bf16 are slow or missing.
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    name = dtype.removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ModelLoadError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
    return value, name


def _read_adapter_base(adapter_dir: Path) -> str:
    import json

    try:
        data = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"adapter {adapter_dir} has an unreadable adapter_config.json: {exc}"
        ) from exc
    base = data.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(
            f"adapter {adapter_dir} does not record its base model "
            "(base_model_name_or_path is empty in adapter_config.json)"
        )
    return str(base)


def _check_local_checkpoint(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"checkpoint path {path} is not a folder")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a LLaVA checkpoint: it has no config.json")


def load_policy(
    path_or_hub_id: str,
    *,
    adapter_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> LoadedPolicy:
    """Load a LLaVA-family checkpoint (local folder or hub id), optionally with a LoRA adapter.

    A folder holding `adapter_config.json` is taken as a PEFT adapter on the base it
    records. Any failure raises `ModelLoadError` naming the checkpoint. With
    HF_HUB_OFFLINE=1 an uncached hub id fails at once instead of retrying.
    """
    import torch

    source, adapter_dir = _resolve_source(path_or_hub_id, adapter_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype, dtype_name = _resolve_dtype(dtype, device)

    model = _load_model(source, torch_dtype, device)
    processor = _load_processor(source, adapter_dir)

    if adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        except Exception as exc:  # peft raises a mix of ValueError / KeyError / OSError
            raise ModelLoadError(
                f"adapter {adapter_dir} could not be loaded on {source}: {exc}"
            ) from exc
        name = f"{source} + {adapter_dir}"
    else:
        name = source

    model.to(device)
    model.eval()
    # Decoder-only batches must be left-padded so every row's new tokens start at one column.
    processor.tokenizer.padding_side = "left"
    return LoadedPolicy(
        model=model, processor=processor, device=device, dtype=dtype_name, name=name
    )


@dataclass(frozen=True)
class PolicyCheck:
    """What `load_policy` would load, found by `check_policy`."""

    source: str  # the full checkpoint: an absolute folder, or a hub id as given
    is_local: bool
    adapter_dir: str | None  # the LoRA adapter folder (absolute), if any
    model_type: str


def check_policy(path_or_hub_id: str, *, adapter_path: str | None = None) -> PolicyCheck:
    """Check, without reading any weights, that `load_policy` would find the checkpoint:
    its folder or hub id, its config (a LLaVA model type), its processor, and the adapter
    folder. Raises `ModelLoadError` naming what is wrong; a hub id is checked against the
    hub (or its local cache under HF_HUB_OFFLINE=1)."""
    source, adapter_dir = _resolve_source(path_or_hub_id, adapter_path)
    config = _load_config(source)
    _load_processor(source, adapter_dir)
    # _resolve_source takes an existing folder as local before any hub id reading.
    is_local = Path(source).is_dir()
    return PolicyCheck(
        source=str(Path(source).resolve()) if is_local else source,
        is_local=is_local,
        adapter_dir=str(adapter_dir.resolve()) if adapter_dir is not None else None,
        model_type=str(getattr(config, "model_type", "")),
    )


def _resolve_source(path_or_hub_id: str, adapter_path: str | None) -> tuple[str, Path | None]:
    """The full checkpoint to read (a checked folder or a hub id) and the adapter folder;
    a folder that is itself an adapter stands for its recorded base plus that adapter."""
    name = str(path_or_hub_id)
    base = name
    local = Path(name).expanduser()
    is_local = local.exists() or not _looks_like_hub_id(name)

    if is_local:
        if (local / "adapter_config.json").is_file() and not (local / "config.json").is_file():
            if adapter_path is not None:
                raise ModelLoadError(
                    f"{local} is itself a LoRA adapter; pass its base as the checkpoint "
                    f"to load the adapter {adapter_path} on top"
                )
            adapter_path = str(local)
            base = _read_adapter_base(local)
            local = Path(base).expanduser()
            is_local = local.exists() or not _looks_like_hub_id(base)
        if is_local:
            _check_local_checkpoint(local)

    adapter_dir: Path | None = None
    if adapter_path is not None:
        adapter_dir = Path(adapter_path).expanduser()
        if not adapter_dir.is_dir():
            raise ModelLoadError(f"adapter path {adapter_dir} does not exist")
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"{adapter_dir} is not a LoRA adapter: it has no adapter_config.json"
            )
    return (str(local) if is_local else base), adapter_dir


def _load_config(source: str) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:  # OSError (not found / offline), ValueError (bad json)
        raise ModelLoadError(_describe_failure(source, exc)) from exc
    model_type = getattr(config, "model_type", "?")
    if "llava" not in model_type:
        raise ModelLoadError(
            f"{source} is not a LLaVA checkpoint: its config has model_type={model_type!r}"
        )
    return config


def _load_model(source: str, torch_dtype: Any, device: str) -> Any:
    from transformers import AutoModelForImageTextToText

    config = _load_config(source)
    try:
        # device_map puts the weights straight on the GPU: a 7B model is not staged in RAM.
        model = AutoModelForImageTextToText.from_pretrained(
            source, config=config, dtype=torch_dtype, device_map={"": device}
        )
    except Exception as exc:
        raise ModelLoadError(_describe_failure(source, exc)) from exc
    attach_image_token_norm(model)
    return model


def _load_processor(source: str, adapter_dir: Path | None) -> Any:
    from transformers import AutoProcessor

    # Training saves the processor next to the adapter; prefer it when present so that
    # tokens added during training are known.
    candidates = []
    if adapter_dir is not None and (adapter_dir / "processor_config.json").is_file():
        candidates.append(str(adapter_dir))
    candidates.append(source)
    last_exc: Exception | None = None
    for candidate in candidates:
        try:
            return AutoProcessor.from_pretrained(candidate)
        except Exception as exc:
            last_exc = exc
    assert last_exc is not None
    raise ModelLoadError(_describe_failure(source, last_exc)) from last_exc


def _describe_failure(source: str, exc: Exception) -> str:
    from huggingface_hub import constants

    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if Path(source).exists():
        return f"{source} is not a LLaVA checkpoint: {reason}"
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: ask it, not os.environ.
    if constants.is_offline_mode():
        return (
            f"cannot load hub id {source!r}: HF_HUB_OFFLINE=1 and it is not in the local "
            f"cache ({reason})"
        )
    return f"cannot load hub id {source!r}: {reason}"


# ---------------------------------------------------------------------------------------
# Generation


def encode_prompts(policy: LoadedPolicy, texts: list[str], images: list[Image.Image] | None) -> Any:
    """Tokenize chat-formatted prompts (and their images) as one left-padded batch."""
    inputs = policy.processor(
        images=[image.convert("RGB") for image in images] if images else None,
        text=texts,
        padding=True,
        return_tensors="pt",
    ).to(policy.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(policy.model.dtype)
    return inputs


_CACHE: dict[tuple[str, str | None, str | None, str | None], LoadedPolicy] = {}


def load_policy_cached(
    path_or_hub_id: str,
    *,
    adapter_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> LoadedPolicy:
    """`load_policy`, keeping the last model loaded: a GPU worker that runs several jobs on
    one checkpoint loads a 7B model once. Only one is kept, so memory stays bounded."""
    key = (path_or_hub_id, adapter_path, device, dtype)
    if key not in _CACHE:
        if _CACHE:
            import gc

            import torch

            _CACHE.clear()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        _CACHE[key] = load_policy(
            path_or_hub_id, adapter_path=adapter_path, device=device, dtype=dtype
        )
    return _CACHE[key]
