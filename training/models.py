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
        KTO = "kto", "KTO"
        MDPO = "mdpo", "mDPO"
        REWARD = "reward", "Reward model"
        GRPO = "grpo", "GRPO"
        ONLINE_DPO = "online_dpo", "Online / mixed DPO"

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
    """One task evaluated on one checkpoint: the inputs that decide it, and its metrics."""

    checkpoint = models.ForeignKey(
        Checkpoint, on_delete=models.PROTECT, related_name="evaluation_runs"
    )
    task = models.CharField(max_length=50)
    data_path = models.CharField(max_length=500, blank=True)
    data_sha256 = models.CharField(max_length=64, blank=True)
    prompt = models.CharField(max_length=50, blank=True)
    params = models.JSONField(default=dict, blank=True)
    judge = models.ForeignKey(
        "annotation.JudgeConfig",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="evaluation_runs",
    )
    metrics = models.JSONField(default=dict, blank=True)
    item_count = models.PositiveIntegerField(default=0)
    training_job = models.ForeignKey(
        TrainingJob,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="evaluation_runs",
        help_text="the training job that asked for this evaluation when it finished",
    )
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


class EvaluationItem(models.Model):
    """One evaluated item: what the policy saw and said, how it was read, and its score."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    key = models.CharField(max_length=200)
    subject = models.CharField(max_length=50, blank=True)
    context = models.CharField(max_length=10, blank=True)
    split = models.CharField(max_length=50, blank=True)
    category = models.CharField(max_length=100, blank=True)
    prompt = models.TextField()
    answers = models.JSONField(default=list)
    parsed = models.JSONField(default=list, blank=True)
    gold = models.TextField(blank=True)
    # Mean correctness over samples (scienceqa, pope) or the judge's score; None: unscored.
    score = models.FloatField(null=True, blank=True)
    record = models.JSONField(default=dict, blank=True, help_text="everything else the run kept")

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="evaluation_item_unique_key")
        ]
        indexes = [models.Index(fields=["run", "subject"]), models.Index(fields=["run", "score"])]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.key}"


class LoopRun(models.Model):
    """One `run_loop` run: its options, what each stage did, and its results (accuracy per
    checkpoint, deltas against the start with intervals, per question kind, the logps
    curves). The shapes are training/core/loop_results.py's; services check them first."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    tag = models.CharField(max_length=200, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    config = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="the command's --json result")
    breakdown = models.JSONField(default=dict, blank=True)
    stages = models.JSONField(default=list, blank=True)
    logps = models.JSONField(default=dict, blank=True)
    # role -> pk: ids, not foreign keys, so that the record outlives a deleted checkpoint.
    checkpoint_ids = models.JSONField(default=dict, blank=True)
    versions = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.tag


class LabRun(models.Model):
    """One lab: several methods trained from one start on one prompt pool and evaluated on
    the same held-out sets (DESIGN.md step 9). `state` is what is done so far, so that a
    resumed lab skips it; `result` is the `lab --json` line (training/core/lab_results.py)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Some methods failed"
        FAILED = "failed", "Failed"

    tag = models.CharField(max_length=200, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    config = models.JSONField(default=dict, blank=True)
    # The shared stages' ids, and per method its status, error, checkpoint, set and costs.
    state = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="the command's --json result")
    breakdown = models.JSONField(default=dict, blank=True)
    stages = models.JSONField(default=list, blank=True)
    logps = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey(
        "workers.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="labs"
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.tag
