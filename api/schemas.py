"""What the REST API reads and writes, as pydantic schemas (the OpenAPI document's models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from django.urls import reverse
from ninja import Schema
from pydantic import Field, StringConstraints

from annotation.core.judges.prompt import DEFAULT_VERSION
from annotation.core.submission import MAX_COMMENT

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Template = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]


def file_url(key: str) -> str:
    """Where the API serves a stored file (after the media access check)."""
    return reverse("api:file", kwargs={"path": key})


class JobOut(Schema):
    id: int
    kind: str
    status: str
    title: str
    queue: str
    progress_done: int
    progress_total: int
    error: str = Field(description="one line, shown to whoever may see the job")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class PromptOut(Schema):
    """A prompt as the annotation page shows it (no reference answer)."""

    id: int
    source: str
    source_id: int
    question: str
    turns: list[dict[str, Any]]
    choices: list[Any]
    hint: str
    subject: str
    split: str
    images: list[str] = Field(description="API URLs of the images, in conversation order")

    @staticmethod
    def resolve_source(obj: Any) -> str:
        return obj.source.name

    @staticmethod
    def resolve_images(obj: Any) -> list[str]:
        if not obj.image:
            return []
        return [file_url(f.name) for f in (obj.image, *(x.image for x in obj.more_images.all()))]


class CuratedPromptOut(PromptOut):
    """A prompt as curators see it: with its ground truth."""

    reference_answer: str
    answer_index: int | None


# --- completions -----------------------------------------------------------------------


class CompletionIn(Schema):
    prompt_id: int
    checkpoint: Name = Field(
        description="the model or checkpoint that wrote it; a new name is registered as an "
        "outside generator"
    )
    text: str = Field(min_length=1, max_length=200_000)
    sample_index: int = Field(0, ge=0, le=10_000)
    template: Template = Field("plain", description="the prompt wording used")
    sampling: dict[str, Any] = Field(
        default_factory=dict, description="how it was sampled (temperature, seed, ...)"
    )


class CompletionsIn(Schema):
    completions: list[CompletionIn] = Field(min_length=1, max_length=1000)


class CompletionOut(Schema):
    id: int
    prompt_id: int
    checkpoint: str
    sample_index: int
    created: bool = Field(description="false: the same sample was there with the same text")


class CompletionsOut(Schema):
    completions: list[CompletionOut]


# --- ratings ---------------------------------------------------------------------------


class ItemCompletionOut(Schema):
    id: int
    text: str


class AssignmentOut(Schema):
    id: int
    campaign_id: int
    status: str
    expires_at: datetime
    prompt: PromptOut
    completions: list[ItemCompletionOut] = Field(
        description="score every one of these, in this order"
    )
    submit_url: str


class CampaignOut(Schema):
    id: int
    name: str
    instructions: str
    overlap: int
    item_count: int
    my_done: int = Field(0, description="items this user has submitted")
    my_open: int = Field(0, description="items assigned to this user, not submitted yet")


class SubmissionIn(Schema):
    """The annotation page's submission, as its script sends it. The properties are loosely
    typed on purpose: the page's own validator (annotation/core/submission.py) judges them,
    so that the API refuses exactly what the page refuses, with the page's messages."""

    scores: Any = Field(
        None,
        description='completion id -> its five HelpSteer scores (integers 0-4), e.g. {"12": '
        '{"helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 2}}'
        "; every completion of the item",
    )
    best: Any = Field(None, description="the best completion's id (unless tie)")
    worst: Any = Field(None, description="the worst completion's id (unless tie)")
    tie: Any = Field(None, description="true: all equal, no best and worst")
    comment: Any = Field(None, description=f"at most {MAX_COMMENT} characters")
    token: Any = Field(
        None,
        description="8-64 characters, new for each submission: a retry with the same token "
        "is stored once",
    )


class SubmissionOut(Schema):
    assignment_id: int
    replayed: bool
    next_url: str


class JudgeOut(Schema):
    id: int
    name: str
    provider: str
    model: str
    prompt_version: str
    temperature: float


class JudgeRatingsIn(Schema):
    judge: str = Field(
        description="the judge's id or name (GET /api/judges), or a judge as the Judge page "
        "names it (oracle, openai:MODEL, gemini:MODEL, local:PATH): its configuration is "
        "looked up, or made after the Judge page's checks"
    )
    prompt_version: str = Field(DEFAULT_VERSION, description="with a judge named as on the page")
    temperature: float = Field(0.0, description="with a judge named as on the page")
    completion_ids: list[int] = Field(
        description="K completions of one prompt: response_1 ... response_K, in this order"
    )
    answer: str | dict[str, Any] = Field(
        description="what the judge wrote: its text, or the JSON object "
        '{"reasoning": ..., "response_1": {"reasoning": ..., "helpfulness": 0-4, ...}, ...}'
    )


class JudgeRatingsOut(Schema):
    rating_ids: list[int]
    kept: int = Field(description="completions this judge had rated already (left as they were)")


# --- dataset versions ------------------------------------------------------------------


class VersionFileOut(Schema):
    name: str
    url: str


class VersionOut(Schema):
    id: int
    name: str
    version: int
    kind: str
    status: str
    strategy: str
    params: dict[str, Any]
    filters: dict[str, Any]
    seed: int
    row_count: int
    checksum: str
    splits: dict[str, int] = Field(description="rows per split")
    created_at: datetime
    created_by: str | None
    exported: bool = Field(description="an export is in storage: GET .../files lists it")

    @staticmethod
    def resolve_splits(obj: Any) -> dict[str, int]:
        return (obj.stats or {}).get("splits", {})

    @staticmethod
    def resolve_created_by(obj: Any) -> str | None:
        return obj.created_by.username if obj.created_by_id else None

    @staticmethod
    def resolve_exported(obj: Any) -> bool:
        return bool(obj.export_path)


class VersionDetailOut(VersionOut):
    files: list[VersionFileOut] = Field(description="the files of the last export")

    @staticmethod
    def resolve_files(obj: Any) -> list[dict[str, str]]:
        from datasets_app.services.exports import export_files

        return [
            {"name": name, "url": reverse("api:version_file", args=[obj.pk, name])}
            for name, _ in export_files(obj)
        ]
