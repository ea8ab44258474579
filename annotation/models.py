from __future__ import annotations

from django.conf import settings
from django.db import models

# HelpSteer order: the attribute string and every table use it.
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
SCORE_MIN, SCORE_MAX = 0, 4


class Completion(models.Model):
    """One sampled answer of a checkpoint to a prompt."""

    prompt = models.ForeignKey(
        "datasets_app.Prompt", on_delete=models.CASCADE, related_name="completions"
    )
    checkpoint = models.ForeignKey(
        "training.Checkpoint", on_delete=models.PROTECT, related_name="completions"
    )
    text = models.TextField()
    template = models.CharField(max_length=50, default="plain")
    sampling = models.JSONField(default=dict, blank=True)
    # sha256 of the canonical sampling JSON: makes (prompt, checkpoint, template, params,
    # sample index) unique without comparing JSON in the database.
    sampling_hash = models.CharField(max_length=64, blank=True)
    sample_index = models.PositiveIntegerField(default=0)
    job = models.ForeignKey(
        "workers.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="completions"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prompt_id", "checkpoint_id", "sample_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "checkpoint", "template", "sampling_hash", "sample_index"],
                name="completion_unique_sample",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} on prompt {self.prompt_id}: {self.text[:50]}"


class JudgeConfig(models.Model):
    """Which AI judge rated: provider, model, prompt version and temperature."""

    class Provider(models.TextChoices):
        GEMINI = "gemini", "Gemini (google-genai)"
        OPENAI = "openai", "OpenAI-compatible"
        LOCAL = "local", "Local VLM"
        ORACLE = "oracle", "Rule-based oracle"

    name = models.CharField(max_length=200, unique=True)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    model = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=20, default="v1")
    temperature = models.FloatField(default=0.0)
    base_url = models.CharField(max_length=300, blank=True)
    options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(temperature__gte=0) & models.Q(temperature__lte=2),
                name="judge_temperature_range",
            )
        ]

    def __str__(self) -> str:
        return self.name


def _score_field(name: str) -> models.PositiveSmallIntegerField:
    return models.PositiveSmallIntegerField(help_text=f"HelpSteer {name}, 0-4")


class Rating(models.Model):
    """Five HelpSteer scores for one completion, by one rater (a person or a judge)."""

    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="ratings")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ratings",
    )
    judge = models.ForeignKey(
        JudgeConfig, null=True, blank=True, on_delete=models.PROTECT, related_name="ratings"
    )
    helpfulness = _score_field("helpfulness")
    correctness = _score_field("correctness")
    coherence = _score_field("coherence")
    complexity = _score_field("complexity")
    verbosity = _score_field("verbosity")
    reasoning = models.TextField(blank=True)
    job = models.ForeignKey(
        "workers.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="ratings"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["completion_id", "id"]
        constraints = [
            *[
                models.CheckConstraint(
                    condition=models.Q(**{f"{a}__gte": SCORE_MIN, f"{a}__lte": SCORE_MAX}),
                    name=f"rating_{a}_0_4",
                )
                for a in ATTRIBUTES
            ],
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False) & models.Q(judge__isnull=True))
                | (models.Q(user__isnull=True) & models.Q(judge__isnull=False)),
                name="rating_one_rater",
            ),
            models.UniqueConstraint(
                fields=["completion", "user"],
                condition=models.Q(user__isnull=False),
                name="rating_one_per_user",
            ),
            models.UniqueConstraint(
                fields=["completion", "judge"],
                condition=models.Q(judge__isnull=False),
                name="rating_one_per_judge",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rater_label} on completion {self.completion_id}"

    @property
    def rater_label(self) -> str:
        return f"judge:{self.judge}" if self.judge_id else f"user:{self.user}"

    @property
    def scores(self) -> dict[str, int]:
        return {a: getattr(self, a) for a in ATTRIBUTES}


class PairPick(models.Model):
    """An annotator's chosen/rejected completion for a prompt, or a tie."""

    prompt = models.ForeignKey(
        "datasets_app.Prompt", on_delete=models.CASCADE, related_name="pair_picks"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="pair_picks"
    )
    chosen = models.ForeignKey(
        Completion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    rejected = models.ForeignKey(
        Completion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    is_tie = models.BooleanField(default=False)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prompt", "annotator"], name="pairpick_one_per_user"),
            models.CheckConstraint(
                condition=(
                    models.Q(is_tie=True)
                    & models.Q(chosen__isnull=True)
                    & models.Q(rejected__isnull=True)
                )
                | (
                    models.Q(is_tie=False)
                    & models.Q(chosen__isnull=False)
                    & models.Q(rejected__isnull=False)
                    & ~models.Q(chosen=models.F("rejected"))
                ),
                name="pairpick_tie_or_distinct_pair",
            ),
        ]

    def __str__(self) -> str:
        if self.is_tie:
            return f"tie on prompt {self.prompt_id} by {self.annotator}"
        return f"{self.chosen_id} > {self.rejected_id} on prompt {self.prompt_id}"


class JudgeCall(models.Model):
    """One judged item (a prompt and K of its completions): the cache of what a judge said,
    the failure record with the raw answer kept, and what it cost."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        FAILED = "failed", "Failed"

    judge = models.ForeignKey(JudgeConfig, on_delete=models.PROTECT, related_name="calls")
    prompt = models.ForeignKey(
        "datasets_app.Prompt", on_delete=models.CASCADE, related_name="judge_calls"
    )
    completion_ids = models.JSONField(default=list)
    # sha256 of (judge config, prompt version, image, question, completions).
    cache_key = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    result = models.JSONField(default=dict, blank=True, help_text="validated ratings")
    raw_response = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    job = models.ForeignKey(
        "workers.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="judge_calls"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["cache_key"],
                condition=models.Q(status="ok"),
                name="judgecall_one_answer_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.judge} on prompt {self.prompt_id} ({self.status})"
