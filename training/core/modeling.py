"""The one loader every policy goes through: any checkpoint that
`AutoModelForImageTextToText` and `AutoProcessor` load (LLaVA, LLaVA-NeXT/OneVision,
Qwen2-VL / Qwen2.5-VL, Idefics3, ...), with its own processor, chat template and image-token
expansion. The offline tiny models are built in `tiny_models.py`.

Pure core: no Django import here (a test checks it), and the heavy libraries (torch,
transformers, peft, tokenizers) are imported inside the functions so that importing this
module from a web process or a management command costs nothing.

Checked against the installed versions (transformers 5.24, tokenizers 0.23, peft 0.21,
torch 2.13 CPU); where REFERENCE.md ("The stack on this kind of machine") differs:
- `CLIPImageProcessor` is the torchvision backend in transformers 5.24; without torchvision
  constructing it falls back to `CLIPImageProcessorPil` with a warning, and `AutoProcessor`
  picks whichever backend the loading machine has, silently.
- A Qwen2-VL / Qwen2.5-VL processor cannot be built or loaded at all without torchvision:
  its video processor imports it (the image processor does fall back to PIL, as REFERENCE
  says). `_image_only_class` loads such a processor without its video half.
- `PreTrainedTokenizerFast` is now an alias of `TokenizersBackend`; the
  `extra_special_tokens={"image_token": ...}` argument still gives the tokenizer
  `image_token` / `image_token_id`, as REFERENCE says.
- `from_pretrained(torch_dtype=...)` is deprecated in favour of `dtype=...`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "LoadedPolicy",
    "ModelLoadError",
    "PolicyCheck",
    "attach_image_token_norm",
    "check_policy",
    "load_policy",
    "load_processor",
]

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
    from training.core.families import family_from_modules

    names = dict(model.named_modules())
    family = family_from_modules(str(getattr(config, "model_type", "")), names)
    projector = next(
        (module for name, module in names.items() if name.endswith(family.projector)), None
    )
    if projector is None:
        raise ModelLoadError(f"image_token_norm is set but the model has no {family.projector}")
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
        raise ModelLoadError(
            f"{path} is not an image-text-to-text checkpoint: it has no config.json"
        )


def load_policy(
    path_or_hub_id: str,
    *,
    adapter_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> LoadedPolicy:
    """Load an image-text-to-text checkpoint (local folder or hub id) of any family that
    `AutoModelForImageTextToText` loads, optionally with a LoRA adapter.

    A folder holding `adapter_config.json` is taken as a PEFT adapter on the base it
    records. Any failure raises `ModelLoadError` naming the checkpoint. With
    HF_HUB_OFFLINE=1 an uncached hub id fails at once instead of retrying.
    """
    import torch

    source, adapter_dir = _resolve_source(path_or_hub_id, adapter_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype, dtype_name = _resolve_dtype(dtype, device)

    config = _load_config(source)
    model = _load_model(source, config, torch_dtype, device)
    processor = _load_processor(source, adapter_dir, config)

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
    its folder or hub id, its config (an image-text-to-text model type), its processor, and
    the adapter folder. Raises `ModelLoadError` naming what is wrong; a hub id is checked
    against the hub (or its local cache under HF_HUB_OFFLINE=1)."""
    source, adapter_dir = _resolve_source(path_or_hub_id, adapter_path)
    config = _load_config(source)
    _load_processor(source, adapter_dir, config)
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
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:  # OSError (not found / offline), ValueError (bad json)
        raise ModelLoadError(_describe_failure(source, exc)) from exc
    model_type = getattr(config, "model_type", "?")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ModelLoadError(
            f"{source} is not an image-text-to-text checkpoint: its config has "
            f"model_type={model_type!r}, which AutoModelForImageTextToText does not load"
        )
    return config


def _load_model(source: str, config: Any, torch_dtype: Any, device: str) -> Any:
    from transformers import AutoModelForImageTextToText

    try:
        # device_map puts the weights straight on the GPU: a 7B model is not staged in RAM.
        model = AutoModelForImageTextToText.from_pretrained(
            source, config=config, dtype=torch_dtype, device_map={"": device}
        )
    except Exception as exc:
        raise ModelLoadError(_describe_failure(source, exc)) from exc
    attach_image_token_norm(model)
    return model


def _load_processor(source: str, adapter_dir: Path | None, config: Any) -> Any:
    from transformers import AutoProcessor

    # Training saves the processor next to the adapter; prefer it when present so that
    # tokens added during training are known.
    candidates = []
    if adapter_dir is not None and (adapter_dir / "processor_config.json").is_file():
        candidates.append(str(adapter_dir))
    candidates.append(source)
    fallback = _image_only_class(config)
    last_exc: Exception | None = None
    for candidate in candidates:
        try:
            if fallback is not None:
                return fallback.from_pretrained(candidate)
            return AutoProcessor.from_pretrained(candidate)
        except Exception as exc:
            last_exc = exc
    assert last_exc is not None
    raise ModelLoadError(_describe_failure(source, last_exc)) from last_exc


def load_processor(path_or_hub_id: str) -> Any:
    """The processor of a checkpoint (or of an adapter's base), as `load_policy` loads it,
    without reading any weights: for engines that load the model themselves (vLLM)."""
    source, adapter_dir = _resolve_source(path_or_hub_id, None)
    return _load_processor(source, adapter_dir, _load_config(source))


def _image_only_class(config: Any) -> Any:
    """The family's processor class without its video half, where that half needs
    torchvision and torchvision is absent (Qwen2-VL, Qwen2.5-VL; see processors.py);
    None where AutoProcessor can load the processor as it is."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    from training.core.processors import has_video_half, image_only, video_backend_missing

    if not video_backend_missing():
        return None
    cls = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(config.model_type) or "", None)
    if cls is None or not has_video_half(cls):
        return None
    return image_only(cls)


def _describe_failure(source: str, exc: Exception) -> str:
    from huggingface_hub import constants

    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if Path(source).exists():
        return f"{source} is not an image-text-to-text checkpoint: {reason}"
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
