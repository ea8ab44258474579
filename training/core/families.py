"""Vision-language model families: where each keeps its vision tower, its projector and its
language model, so that freezing, LoRA targets and the image-token rescaling work on any
`AutoModelForImageTextToText` checkpoint, not only LLaVA-1.5.

Pure core, no Django and no torch. Module paths are those of transformers 5.24 (checked on
the installed classes): LLaVA / LLaVA-NeXT / LLaVA-OneVision keep `model.vision_tower`,
`model.multi_modal_projector`, `model.language_model`; Qwen2-VL / Qwen2.5-VL keep the
projector (`merger`) inside the vision tower, `model.visual.merger`; Idefics3 / SmolVLM use
`model.vision_model`, `model.connector`, `model.text_model`. A model type not listed here is
classified by which of those names its modules carry (`family_from_modules`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FAMILIES",
    "Family",
    "UnknownLayout",
    "family_for",
    "family_from_modules",
    "language_model_targets",
]

# The linear layers of a Llama / Qwen2 / Mistral decoder layer: attention and MLP.
DECODER_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

VISION, PROJECTOR, LANGUAGE = "vision", "projector", "language"


class UnknownLayout(ValueError):
    """The model's modules match no family: its vision tower cannot be told apart."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    vision: str  # the vision tower's module name under the model
    projector: str  # the vision-to-text projector; may sit inside the vision tower
    language: str  # the language model's module name
    lora_targets: tuple[str, ...] = DECODER_LINEAR
    # Parameters of the vision-to-text path outside the projector module (LLaVA-NeXT's
    # learned row separator): frozen and trained with the projector.
    projector_extras: tuple[str, ...] = ()

    def part(self, parameter: str) -> str | None:
        """VISION, PROJECTOR or LANGUAGE for a parameter (or module) path; None for the
        rest (the LM head, which ties to or sits beside the embeddings)."""
        dotted = f".{parameter}."
        # The projector first: Qwen's merger lives inside its vision tower.
        if any(f".{name}." in dotted for name in (self.projector, *self.projector_extras)):
            return PROJECTOR
        if f".{self.vision}." in dotted:
            return VISION
        if f".{self.language}." in dotted:
            return LANGUAGE
        return None


FAMILIES: tuple[Family, ...] = (
    Family(
        "llava",
        ("llava", "llava_next", "llava_onevision", "llava_next_video", "vipllava", "mistral3"),
        vision="vision_tower",
        projector="multi_modal_projector",
        language="language_model",
        projector_extras=("image_newline",),
    ),
    Family(
        "qwen2_vl",
        ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"),
        vision="visual",
        projector="visual.merger",
        language="language_model",
    ),
    Family(
        "idefics3",
        ("idefics3", "smolvlm"),
        vision="vision_model",
        projector="connector",
        language="text_model",
    ),
)


def family_for(model_type: str) -> Family | None:
    """The family a config's `model_type` belongs to, or None when it is not listed."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def family_from_modules(model_type: str, module_names: Iterable[str]) -> Family:
    """The family of a loaded model: by its model type, else by the first layout whose
    three parts all appear among its module names (a new model of a known layout)."""
    known = family_for(model_type)
    if known is not None:
        return known
    names = [f".{name}." for name in module_names]
    for family in FAMILIES:
        parts = (family.vision, family.projector, family.language)
        if all(any(f".{part}." in name for name in names) for part in parts):
            return family
    layouts = "; ".join(f"{f.name}: {f.vision}, {f.projector}, {f.language}" for f in FAMILIES)
    raise UnknownLayout(
        f"model type {model_type!r} has none of the known module layouts ({layouts}): "
        "its vision tower cannot be told from its language model"
    )


def language_model_targets(family: Family, names: Sequence[str]) -> str:
    """A PEFT target regex (a full match on the module path) for `names` inside the
    language model only, e.g. model.language_model.layers.0.self_attn.q_proj but not
    model.visual.blocks.0.attn.proj or model.vision_tower...q_proj."""
    alternatives = "|".join(re.escape(name) for name in names)
    return rf".*\.{re.escape(family.language)}\..*\.({alternatives})"
