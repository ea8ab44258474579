"""Reads for prompts and sources."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from datasets_app.models import Prompt, Source


def prompt_counts() -> dict[str, int]:
    return {"sources": Source.objects.count(), "prompts": Prompt.objects.count()}


def prompt_list(*, source_id: int | None = None, split: str = "", query: str = "") -> QuerySet:
    prompts = Prompt.objects.select_related("source").order_by("id")
    if source_id:
        prompts = prompts.filter(source_id=source_id)
    if split:
        prompts = prompts.filter(split=split)
    if query:
        prompts = prompts.filter(question__icontains=query)
    return prompts


def source_list() -> QuerySet:
    return Source.objects.annotate(n_prompts=Count("prompts")).order_by("name")
