"""Writes for checkpoints: where their folders are, and registering one after the loader's
own checks."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from training.core.modeling import ModelLoadError, check_policy
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


def checkpoint_stored_path(path: str | Path) -> str:
    """A local folder as a row keeps it: relative to CHECKPOINT_ROOT when under it (see
    checkpoint_location), else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path(settings.CHECKPOINT_ROOT).resolve()))
    except ValueError:
        return str(resolved)


def checkpoint_register(
    *, model_path: str, name: str = "", adapter_path: str = "", notes: str = ""
) -> Checkpoint:
    """Register a checkpoint (a folder or hub id, optionally with a LoRA adapter) after
    checking that the loader finds its config and processor; nothing is created otherwise.

    A folder that is itself an adapter is stored as its recorded base plus that adapter,
    which is what training on it needs. `name` defaults to the hub id or the folder name.
    """
    model_path, adapter_path = model_path.strip(), adapter_path.strip()
    if not model_path:
        raise ValueError("a checkpoint needs a model path or hub id")
    try:
        checked = check_policy(model_path, adapter_path=adapter_path or None)
    except ModelLoadError as exc:
        raise ValueError(str(exc)) from None
    stored_model = checkpoint_stored_path(checked.source) if checked.is_local else checked.source
    stored_adapter = checkpoint_stored_path(checked.adapter_dir) if checked.adapter_dir else ""
    if not name.strip():
        default = checked.adapter_dir or (checked.source if checked.is_local else "")
        name = Path(default).name if default else checked.source
    name = name.strip()
    if len(name) > Checkpoint._meta.get_field("name").max_length:
        raise ValueError(f"the checkpoint name {name[:40]!r}... is too long")
    taken = f"a checkpoint named {name!r} exists already: choose another name"
    if Checkpoint.objects.filter(name=name).exists():
        raise ValueError(taken)
    try:
        with transaction.atomic():
            return Checkpoint.objects.create(
                name=name,
                kind=Checkpoint.Kind.BASE,
                model_path=stored_model,
                adapter_path=stored_adapter,
                config={"registered_from": model_path, "model_type": checked.model_type},
                notes=notes,
            )
    except IntegrityError:  # registered by someone else since the check above
        raise ValueError(taken) from None


def checkpoint_paths(checkpoint: Checkpoint) -> tuple[str, str | None]:
    """The model folder (or hub id) and the adapter folder the loader is given."""
    adapter = checkpoint_location(checkpoint.adapter_path) if checkpoint.adapter_path else None
    return checkpoint_location(checkpoint.model_path), adapter


def reward_model_folder(name: str) -> str:
    """The folder of the reward model registered as checkpoint `name` (the one holding its
    head: the adapter, or the full model); ValueError names what is wrong."""

    name = name.strip()
    checkpoint = Checkpoint.objects.filter(name=name).first()
    if checkpoint is None:
        raise ValueError(f"no checkpoint named {name!r}")
    if (checkpoint.config or {}).get("recipe") != "reward":
        raise ValueError(f"{name} is not a reward model (train one with the reward recipe)")
    return checkpoint_location(checkpoint.adapter_path or checkpoint.model_path)
