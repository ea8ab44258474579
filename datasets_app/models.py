from __future__ import annotations

from django.conf import settings
from django.db import models


class Source(models.Model):
    """A named import: where a set of prompts came from, and what was rejected."""

    class Kind(models.TextChoices):
        PROMPTS = "prompts", "Prompts (parquet / JSONL / image folder)"
        SCIENCEQA = "scienceqa", "ScienceQA format"
        POPE = "pope", "POPE format"
        DPO = "dpo", "Preference pairs (TRL DPO parquet)"
        SFT = "sft", "SFT examples (images + messages parquet)"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    file_name = models.CharField(max_length=500, help_text="the file or folder imported last")
    file_sha256 = models.CharField(max_length=64, blank=True)
    rows_total = models.PositiveIntegerField(default=0)
    rows_imported = models.PositiveIntegerField(default=0)
    rows_duplicate = models.PositiveIntegerField(default=0)
    rows_rejected = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=list, blank=True, help_text="one entry per rejected row")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    """A conversation to answer: earlier `turns` (maybe none) and the final user turn's
    `question`, its images (the first here, the rest as PromptImage rows, in order), and
    whatever ground truth the source had. Layout: datasets_app/core/conversation.py."""

    class Split(models.TextChoices):
        TRAIN = "train", "train"
        VALIDATION = "validation", "validation"
        TEST = "test", "test"

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="prompts")
    # Stored under media by the image's sha256, so identical images are stored once.
    image = models.FileField(max_length=300, blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    question = models.TextField(help_text="the final user turn's text")
    # The turns before the final user turn, in TRL's conversational layout; their image
    # parts take the prompt's images in order.
    turns = models.JSONField(default=list, blank=True)
    reference_answer = models.TextField(blank=True)
    choices = models.JSONField(default=list, blank=True)
    answer_index = models.IntegerField(null=True, blank=True)
    hint = models.TextField(blank=True)
    subject = models.CharField(max_length=100, blank=True, db_index=True)
    split = models.CharField(max_length=20, choices=Split.choices, default=Split.TRAIN)
    metadata = models.JSONField(default=dict, blank=True)
    # sha256 over image hash, question, choices, answer and hint: what makes a row "the same".
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "content_hash"], name="prompt_unique_per_source"
            ),
            models.CheckConstraint(
                condition=models.Q(answer_index__isnull=True) | models.Q(answer_index__gte=0),
                name="prompt_answer_index_non_negative",
            ),
        ]
        indexes = [models.Index(fields=["source", "split"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.question[:60]}"

    @property
    def image_total(self) -> int:
        """How many images the prompt has (prefetch `more_images` for a list of prompts)."""
        return (1 + len(self.more_images.all())) if self.image else 0


class PromptImage(models.Model):
    """The second and later images of a prompt (the first is `Prompt.image`)."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="more_images")
    position = models.PositiveIntegerField(help_text="1 for the prompt's second image, ...")
    image = models.FileField(max_length=300)
    image_sha256 = models.CharField(max_length=64, db_index=True)
    image_width = models.PositiveIntegerField()
    image_height = models.PositiveIntegerField()

    class Meta:
        ordering = ["prompt_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "position"], name="promptimage_position"),
            models.CheckConstraint(
                condition=models.Q(position__gte=1), name="promptimage_position_after_first"
            ),
        ]

    def __str__(self) -> str:
        return f"prompt #{self.prompt_id} image {self.position + 1}"


class DatasetVersion(models.Model):
    """An immutable, curated training set. Filled by the curation issue."""

    class Kind(models.TextChoices):
        DPO = "dpo", "DPO pairs"
        SFT = "sft", "SFT"
        STEERLM = "steerlm", "SteerLM"
        KTO = "kto", "KTO (unpaired)"

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.BUILDING)
    strategy = models.CharField(max_length=50)
    params = models.JSONField(default=dict, blank=True)
    rater_selection = models.JSONField(default=dict, blank=True)
    filters = models.JSONField(default=dict, blank=True)
    selection = models.JSONField(default=dict, blank=True, help_text="which prompts were read")
    seed = models.IntegerField(default=0)
    sources = models.ManyToManyField(Source, blank=True, related_name="dataset_versions")
    row_count = models.PositiveIntegerField(default=0)
    stats = models.JSONField(default=dict, blank=True)
    checksum = models.CharField(max_length=64, blank=True)
    export_path = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="dataset_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class DatasetRow(models.Model):
    """One frozen row of a dataset version: texts and scores copied at build time, so that
    later rating edits never change a version."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="rows")
    split = models.CharField(max_length=10, default="train")
    position = models.PositiveIntegerField()
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="+")
    question = models.TextField(help_text="the user turn")
    chosen = models.TextField(help_text="the chosen answer, or the SFT response")
    rejected = models.TextField(blank=True)
    chosen_completion = models.ForeignKey(
        "annotation.Completion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rejected_completion = models.ForeignKey(
        "annotation.Completion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    chosen_scores = models.JSONField(default=dict, blank=True)
    rejected_scores = models.JSONField(default=dict, blank=True)
    margin = models.FloatField(default=0.0)
    rater = models.CharField(max_length=300, blank=True)
    label = models.CharField(max_length=200, blank=True, help_text="SteerLM attribute string")

    class Meta:
        ordering = ["version_id", "split", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "split", "position"], name="datasetrow_unique_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.version} {self.split}#{self.position}"
