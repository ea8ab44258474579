from __future__ import annotations

from django.conf import settings
from django.db import models


class Job(models.Model):
    """One row for every long task: the single source of truth for its state.

    Celery's result backend is not used; pages poll this row.
    """

    class Kind(models.TextChoices):
        IMPORT = "import", "Import"
        GENERATION = "generation", "Generation"
        JUDGING = "judging", "Judging"
        EXPORT = "export", "Export"
        TRAINING = "training", "Training"
        EVALUATION = "evaluation", "Evaluation"
        LAB = "lab", "Lab"
        SELFTEST = "selftest", "Queue self-test"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    queue = models.CharField(max_length=20, default="default")
    title = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True, help_text="one line, shown to whoever may see the job")
    error_detail = models.TextField(
        blank=True, help_text="the traceback or full text behind `error`: shown to staff only"
    )
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid that ran it")
    attempts = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kind", "status"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress_done__lte=models.F("progress_total"))
                | models.Q(progress_total=0),
                name="job_progress_within_total",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def percent(self) -> int:
        if not self.progress_total:
            return 100 if self.status == self.Status.SUCCEEDED else 0
        return int(100 * self.progress_done / self.progress_total)


class JobChunk(models.Model):
    """A slice of a sharded job's items (prompt ids), run as its own Celery task.

    Workers on the job's queue take chunks independently; the Job row adds up their
    progress. A chunk's body is idempotent (the rows it writes have unique keys), so a chunk
    delivered again after its worker died redoes only what was not written.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    items = models.JSONField(default=list, help_text="the ids this chunk works on")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(
        default=0, help_text="units of progress: its items, or what its body counts instead"
    )
    metrics = models.JSONField(default=dict, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid that ran it")
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="job_chunk_index_unique")
        ]
        indexes = [models.Index(fields=["job", "status"])]

    def __str__(self) -> str:
        return f"chunk {self.index} of job #{self.job_id} ({self.status})"
