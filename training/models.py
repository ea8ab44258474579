from __future__ import annotations

from django.conf import settings
from django.db import models


class Checkpoint(models.Model):
    """A policy that can generate: a base model (path or hub id) or a trained one."""

    class Kind(models.TextChoices):
        BASE = "base", "Base model"
        TRAINED = "trained", "Trained"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.BASE)
    # A local folder (absolute, or relative to CHECKPOINT_ROOT) or a hub id.
    model_path = models.CharField(max_length=500)
    adapter_path = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    training_job = models.ForeignKey(
        "training.TrainingJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="checkpoints",
    )
    config = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="base") | models.Q(parent__isnull=False),
                name="checkpoint_trained_has_parent",
            )
        ]

    def __str__(self) -> str:
        return self.name


class TrainingJob(models.Model):
    """A fine-tune launched from a dataset version: the config it runs with, where its
    outputs go, and (through `job`) its state, metrics and log."""

    class Recipe(models.TextChoices):
        SFT = "sft", "SFT"
        STEERLM = "steerlm", "SteerLM"
        DPO = "dpo", "DPO"

    name = models.CharField(max_length=200)
    recipe = models.CharField(max_length=20, choices=Recipe.choices)
    base_checkpoint = models.ForeignKey(
        Checkpoint, on_delete=models.PROTECT, related_name="training_jobs"
    )
    dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion", on_delete=models.PROTECT, related_name="training_jobs"
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="the TrainConfig, less the paths set at run time"
    )
    gpus = models.PositiveSmallIntegerField(default=1)
    zero = models.CharField(max_length=20, blank=True, help_text="DeepSpeed ZeRO stage, if any")
    evaluations = models.JSONField(
        default=list, blank=True, help_text="evaluations to launch on the checkpoint at the end"
    )
    dataset_checksum = models.CharField(max_length=64, blank=True)
    job = models.OneToOneField(
        "workers.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="training"
    )
    output_dir = models.CharField(max_length=500, blank=True)
    code_version = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(gpus__gte=1), name="trainingjob_gpus_min_1")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.recipe})"


class EvaluationRun(models.Model):
    """One task evaluated on one checkpoint. Filled by the evaluation issue."""

    checkpoint = models.ForeignKey(
        Checkpoint, on_delete=models.PROTECT, related_name="evaluation_runs"
    )
    task = models.CharField(max_length=50)
    data_path = models.CharField(max_length=500, blank=True)
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    job = models.OneToOneField(
        "workers.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluation"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.task} on {self.checkpoint}"
