"""Reads for prompts and sources."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from datasets_app.models import DatasetVersion, Prompt, Source


def prompt_conversation(prompt: Prompt) -> dict[str, Any]:
    """What a page shows of a prompt's conversation: the earlier turns with their images
    inline (numbered in order), then the images that come with the question."""
    files = [prompt.image, *(extra.image for extra in prompt.more_images.all())]
    urls = [file.url for file in files] if prompt.image else []
    turns, used = [], 0
    for turn in prompt.turns:
        parts = []
        for part in turn["content"]:
            if part.get("type") == "image":
                parts.append({"url": urls[used], "number": used + 1})
                used += 1
            elif (part.get("text") or "").strip():
                parts.append({"text": part["text"]})
        turns.append({"role": turn["role"], "parts": parts})
    final = [{"url": url, "number": n} for n, url in enumerate(urls[used:], start=used + 1)]
    return {"turns": turns, "final_images": final, "image_total": len(urls)}


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


def version_list() -> QuerySet:
    """Dataset versions as the Datasets page and the API list them: by name, newest first."""
    return DatasetVersion.objects.select_related("created_by").order_by("name", "-version")


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
