"""Helpers shared by management commands."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError


def object_by_name_or_id(model: Any, value: str, what: str) -> Any:
    """The row of `model` named `value` (or with that id); CommandError when there is none."""
    found = model.objects.filter(name=value).first()
    if found is None and value.isdigit():
        found = model.objects.filter(pk=int(value)).first()
    if found is None:
        raise CommandError(f"no {what} named {value!r}")
    return found
