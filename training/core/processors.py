"""Processors of families whose video half cannot be built here.

transformers 5.24 makes every Qwen2-VL / Qwen2.5-VL processor hold a video processor, and
that class imports torchvision, which this stack must not install (REFERENCE.md): the
processor cannot be constructed, nor loaded by `AutoProcessor`, although its image processor
falls back to the PIL class and images need nothing else. `image_only(cls)` is the same
processor class without the video attribute: it tokenizes, expands image tokens and saves
exactly as `cls` does (the saved `processor_class` is `cls`'s name, so a machine with
torchvision loads the folder as the full class). Videos are refused, as they should be here.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

__all__ = ["image_only", "video_backend_missing"]

_VIDEO = "video_processor"


def video_backend_missing() -> bool:
    return importlib.util.find_spec("torchvision") is None


@functools.cache
def image_only(cls: type) -> type:
    """`cls` (a ProcessorMixin subclass) without its video processor attribute."""
    attributes = [name for name in cls.get_attributes() if name != _VIDEO]  # type: ignore[attr-defined]

    def get_attributes(_: type) -> list[str]:
        return list(attributes)

    # Named and placed as `cls`, so that save_pretrained records `cls` as the class to load.
    return type(
        cls.__name__,
        (cls,),
        {"get_attributes": classmethod(get_attributes), "__module__": cls.__module__},
    )


def has_video_half(cls: Any) -> bool:
    return _VIDEO in getattr(cls, "get_attributes", lambda: [])()
