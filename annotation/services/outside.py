"""Writes for what was made outside the studio and pushed in (the REST API): completions of
any generator, and a judge's ratings. Each push is checked whole before anything is
written, with the same rules as the studio's own writers, and written in one transaction.

A person's ratings and pick come in through their assignment (`campaigns.assignment_submit`),
exactly as the annotation page sends them; nothing here duplicates that path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from annotation.core.judges.base import InvalidJudgeOutput, parse_ratings
from annotation.models import Completion, JudgeConfig, Rating
from annotation.services.judging import judge_rating_rows, judge_result_json
from datasets_app.models import Prompt
from training.models import Checkpoint

# What a checkpoint first named by a push points at: nothing the studio can load, so that
# launching generation on it is refused by the loader's check, as for imported answers.
OUTSIDE_MODEL_PATH = "(outside generator)"
MAX_JUDGED_TOGETHER = 32  # the judge page's largest K per call
# Providers whose answers are the five HelpSteer scores; a reward model gives a number and
# a panel's rating is computed from its members', so neither is pushed.
RATING_PROVIDERS = ("oracle", "gemini", "openai", "local")

Loc = tuple[str | int, ...]


class PushRejected(ValueError):
    """Nothing was written: `errors` says what, as (where in the input, message) pairs."""

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in errors))
        self.errors = errors


@dataclass(frozen=True)
class OutsideCompletion:
    prompt_id: int
    checkpoint: str  # the generator's name; a new name registers an outside checkpoint
    text: str
    sample_index: int = 0
    template: str = "plain"
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def sampling_hash(self) -> str:
        # As generation hashes its SamplingParams: sha256 of the sorted JSON. Empty stays
        # empty, as for imported answers.
        if not self.sampling:
            return ""
        return hashlib.sha256(json.dumps(self.sampling, sort_keys=True).encode()).hexdigest()


@dataclass
class PushedCompletion:
    completion: Completion
    created: bool  # False: the same sample with the same text was there already


def _key(row: OutsideCompletion, checkpoint_id: int | None) -> tuple:
    return (row.prompt_id, checkpoint_id, row.template, row.sampling_hash, row.sample_index)


def completions_push(
    *, rows: Sequence[OutsideCompletion], user: Any = None
) -> list[PushedCompletion]:
    """Store completions of outside generators, all or none. A sample that is already there
    (same prompt, checkpoint, template, sampling and index) with the same text is returned
    as it is, so a retried push is harmless; with another text it is refused."""
    errors: list[tuple[Loc, str]] = []
    known_prompts = set(
        Prompt.objects.filter(pk__in={r.prompt_id for r in rows}).values_list("pk", flat=True)
    )
    checkpoints = {
        c.name: c for c in Checkpoint.objects.filter(name__in={r.checkpoint for r in rows})
    }
    seen: dict[tuple, int] = {}
    for n, row in enumerate(rows):
        if row.prompt_id not in known_prompts:
            errors.append(((n, "prompt_id"), f"no prompt with id {row.prompt_id}"))
        if not row.text.strip():
            errors.append(((n, "text"), "the completion is empty"))
        if not row.checkpoint.strip():
            errors.append(((n, "checkpoint"), "name the model or checkpoint that wrote it"))
        key = (*_key(row, None), row.checkpoint)
        if key in seen:
            errors.append(((n, "sample_index"), f"the same sample as row {seen[key]}"))
        seen.setdefault(key, n)
    existing = _existing(rows, checkpoints)
    for n, row in enumerate(rows):
        found = existing.get(_key(row, getattr(checkpoints.get(row.checkpoint), "pk", None)))
        if found is not None and found.text != row.text:
            errors.append(
                (
                    (n, "text"),
                    f"sample {row.sample_index} of {row.checkpoint} on prompt {row.prompt_id} "
                    f"exists with another text (completion {found.pk})",
                )
            )
    if errors:
        raise PushRejected(errors)
    try:
        with transaction.atomic():
            return _write_completions(rows, checkpoints, existing, user)
    except IntegrityError:  # the same sample pushed by someone else since the checks
        raise PushRejected(
            [((), "another push wrote these samples meanwhile: send it again")]
        ) from None


def _write_completions(
    rows: Sequence[OutsideCompletion],
    checkpoints: dict[str, Checkpoint],
    existing: dict[tuple, Completion],
    user: Any,
) -> list[PushedCompletion]:
    for name in sorted({r.checkpoint for r in rows} - set(checkpoints)):
        checkpoints[name], _ = Checkpoint.objects.get_or_create(
            name=name,
            defaults={
                "kind": Checkpoint.Kind.BASE,
                "model_path": OUTSIDE_MODEL_PATH,
                "notes": f"completions pushed through the API by {user or 'someone'}",
            },
        )
    pushed = []
    for row in rows:
        checkpoint = checkpoints[row.checkpoint]
        found = existing.get(_key(row, checkpoint.pk))
        if found is not None:
            pushed.append(PushedCompletion(found, created=False))
            continue
        completion = Completion(
            prompt_id=row.prompt_id,
            checkpoint=checkpoint,
            text=row.text,
            template=row.template,
            sampling=row.sampling,
            sampling_hash=row.sampling_hash,
            sample_index=row.sample_index,
        )
        pushed.append(PushedCompletion(completion, created=True))
    # One INSERT for the push; both databases give the new rows their ids back.
    Completion.objects.bulk_create([p.completion for p in pushed if p.created], batch_size=500)
    return pushed


def _existing(
    rows: Sequence[OutsideCompletion], checkpoints: dict[str, Checkpoint]
) -> dict[tuple, Completion]:
    """The stored completions that rows would duplicate, by their unique key."""
    ids = [c.pk for c in checkpoints.values()]
    if not ids:
        return {}
    stored = Completion.objects.filter(
        prompt_id__in={r.prompt_id for r in rows},
        checkpoint_id__in=ids,
        sample_index__in={r.sample_index for r in rows},
    )
    return {
        (c.prompt_id, c.checkpoint_id, c.template, c.sampling_hash, c.sample_index): c
        for c in stored
    }


@dataclass
class JudgedPush:
    ratings: list[Rating]
    kept: int  # completions this judge had rated already: their ratings stay as they were


def judge_ratings_push(
    *, judge: JudgeConfig, completion_ids: Sequence[int], answer: str | dict
) -> JudgedPush:
    """Store a judge's answer on K completions of one prompt, validated as the judge runner
    validates every answer (`parse_ratings`: reasoning, then all K rated, integers 0-4).

    `answer` is what the judge wrote (its text, or the JSON object), with the completions
    numbered response_1..response_K in the order of `completion_ids`. As in a judging run,
    a completion this judge rated before keeps its rating."""
    errors: list[tuple[Loc, str]] = []
    if judge.provider not in RATING_PROVIDERS:
        errors.append((("judge",), f"a {judge.provider} judge does not give the five scores"))
    ids = list(completion_ids)
    if not 1 <= len(ids) <= MAX_JUDGED_TOGETHER:
        errors.append((("completion_ids",), f"rate 1 to {MAX_JUDGED_TOGETHER} completions"))
    if len(set(ids)) != len(ids):
        errors.append((("completion_ids",), "a completion is named twice"))
    found = Completion.objects.in_bulk(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        errors.append((("completion_ids",), f"no completion with id {missing[0]}"))
    elif len({c.prompt_id for c in found.values()}) > 1:
        errors.append((("completion_ids",), "a judge call rates completions of one prompt"))
    raw = answer if isinstance(answer, str) else json.dumps(answer)
    result = None
    try:
        result = parse_ratings(raw, len(ids)) if ids else None
    except InvalidJudgeOutput as exc:
        errors.append((("answer",), str(exc)))
    if errors or result is None:
        raise PushRejected(errors)
    with transaction.atomic():
        rated = set(
            Rating.objects.filter(completion_id__in=ids, judge=judge).values_list(
                "completion_id", flat=True
            )
        )
        rows = judge_rating_rows(judge, [found[i] for i in ids], judge_result_json(result), None)
        new = [rating for rating in rows if rating.completion_id not in rated]
        Rating.objects.bulk_create(new)
    return JudgedPush(ratings=new, kept=len(rated))
