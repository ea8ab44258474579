"""Writes for checkpoints (training and evaluation services join them later)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from training.models import Checkpoint


def checkpoint_location(model_path: str) -> str:
    """A folder relative to CHECKPOINT_ROOT, an absolute folder, or else a hub id as given.

    Relative folders keep rows valid when CHECKPOINT_ROOT is a shared volume mounted at
    different places on different machines.
    """
    candidate = Path(model_path)
    if not candidate.is_absolute():
        under_root = Path(settings.CHECKPOINT_ROOT) / candidate
        if under_root.exists():
            return str(under_root)
    return model_path


def checkpoint_register_base(*, name: str, model_path: str, notes: str = "") -> Checkpoint:
    """Register (or return the existing) base checkpoint for a folder or hub id."""
    name, model_path = name.strip(), model_path.strip()
    if not name or not model_path:
        raise ValueError("a checkpoint needs a name and a model path or hub id")
    checkpoint, created = Checkpoint.objects.get_or_create(
        name=name,
        defaults={"kind": Checkpoint.Kind.BASE, "model_path": model_path, "notes": notes},
    )
    if not created and checkpoint.model_path != model_path:
        raise ValueError(
            f"checkpoint {name!r} already points at {checkpoint.model_path!r}, not {model_path!r}"
        )
    return checkpoint
