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


def prompt_selection_ids(
    *,
    source_id: int | None = None,
    split: str = "",
    subject: str = "",
    question_contains: str = "",
    prompt_ids: list[int] | None = None,
    limit: int | None = None,
) -> list[int]:
    """Ids of the prompts a job works on, in a stable order (frozen into the job)."""
    prompts = Prompt.objects.order_by("id")
    if source_id:
        prompts = prompts.filter(source_id=source_id)
    if split:
        prompts = prompts.filter(split=split)
    if subject:
        prompts = prompts.filter(subject=subject)
    if question_contains:
        prompts = prompts.filter(question__icontains=question_contains)
    if prompt_ids:
        prompts = prompts.filter(pk__in=prompt_ids)
    ids = prompts.values_list("id", flat=True)
    return list(ids[:limit] if limit else ids)
