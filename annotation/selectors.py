"""Reads for completions and ratings."""

from __future__ import annotations

from itertools import groupby

from annotation.models import Completion


def prompt_completions_by_checkpoint(*, prompt_id: int) -> list[tuple[object, list[Completion]]]:
    """A prompt's completions, grouped by the checkpoint that wrote them."""
    rows = (
        Completion.objects.filter(prompt_id=prompt_id)
        .select_related("checkpoint")
        .order_by("checkpoint__name", "template", "sampling_hash", "sample_index")
    )
    return [(ckpt, list(group)) for ckpt, group in groupby(rows, key=lambda c: c.checkpoint)]


def rater_choices() -> list[tuple[str, str]]:
    """Every rater with at least one rating, as ("judge:ID" | "user:ID", label)."""
    from django.contrib.auth import get_user_model

    from annotation.models import JudgeConfig, Rating

    judge_ids = Rating.objects.filter(judge__isnull=False).values("judge_id").distinct()
    user_ids = Rating.objects.filter(user__isnull=False).values("user_id").distinct()
    judges = [
        (f"judge:{j.pk}", f"judge {j.name}") for j in JudgeConfig.objects.filter(pk__in=judge_ids)
    ]
    users = [
        (f"user:{u.pk}", f"annotator {u.username}")
        for u in get_user_model().objects.filter(pk__in=user_ids).order_by("username")
    ]
    return judges + users


def rater_scores(rater: str) -> tuple[dict[int, dict[str, int]], dict[int, int]]:
    """Scores by completion id for one rater, and the prompt of each completion."""
    from annotation.models import ATTRIBUTES, Rating

    kind, _, pk = rater.partition(":")
    if kind not in ("judge", "user") or not pk.isdigit():
        raise ValueError(f"unknown rater {rater!r}")
    rows = Rating.objects.filter(**{f"{kind}_id": int(pk)}).values(
        "completion_id", "completion__prompt_id", *ATTRIBUTES
    )
    scores = {r["completion_id"]: {a: r[a] for a in ATTRIBUTES} for r in rows}
    prompts = {r["completion_id"]: r["completion__prompt_id"] for r in rows}
    return scores, prompts
