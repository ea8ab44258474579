from __future__ import annotations

from django.conf import settings
from django.db import models

# The HelpSteer attributes and scale, defined once in the judge core.
from annotation.core.judges.base import ATTRIBUTES, SCORE_MAX, SCORE_MIN


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
        REWARD = "reward", "Reward model (a trained checkpoint)"
        PANEL = "panel", "Panel of judges (their mean or median)"

    name = models.CharField(max_length=200, unique=True)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    model = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=20, default="v2")
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
    """Five HelpSteer scores for one completion, by one rater (a person or a judge).

    A curator's resolution of a disagreement is a rating of its own kind, so that it never
    overwrites what the curator rated as an annotator.
    """

    class Kind(models.TextChoices):
        ANNOTATION = "annotation", "Annotation"
        RESOLUTION = "resolution", "Resolution"

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
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.ANNOTATION)
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
                fields=["completion", "user", "kind"],
                condition=models.Q(user__isnull=False),
                name="rating_one_per_user_and_kind",
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
    """A chosen/rejected choice for a prompt, or a tie: an annotator's, or one that came with
    an imported preference file (then `source` says which)."""

    prompt = models.ForeignKey(
        "datasets_app.Prompt", on_delete=models.CASCADE, related_name="pair_picks"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="pair_picks",
    )
    source = models.ForeignKey(
        "datasets_app.Source",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="pair_picks",
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
            models.UniqueConstraint(
                fields=["prompt", "annotator"],
                condition=models.Q(annotator__isnull=False),
                name="pairpick_one_per_user",
            ),
            models.UniqueConstraint(
                fields=["prompt", "source"],
                condition=models.Q(source__isnull=False),
                name="pairpick_one_per_import",
            ),
            models.CheckConstraint(
                condition=(models.Q(annotator__isnull=False) & models.Q(source__isnull=True))
                | (models.Q(annotator__isnull=True) & models.Q(source__isnull=False)),
                name="pairpick_annotator_or_import",
            ),
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
        who = self.annotator or f"import {self.source_id}"
        if self.is_tie:
            return f"tie on prompt {self.prompt_id} by {who}"
        return f"{self.chosen_id} > {self.rejected_id} on prompt {self.prompt_id} by {who}"


class RewardScore(models.Model):
    """A reward model's scalar for one completion (a judge of provider "reward"): kept
    beside the completion's HelpSteer ratings, since a reward model gives no scores; the
    scale is the model's own, so rewards compare within one judge only."""

    completion = models.ForeignKey(
        Completion, on_delete=models.CASCADE, related_name="reward_scores"
    )
    judge = models.ForeignKey(JudgeConfig, on_delete=models.PROTECT, related_name="reward_scores")
    reward = models.FloatField()
    job = models.ForeignKey(
        "workers.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reward_scores",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["completion_id", "judge_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["completion", "judge"], name="one_reward_per_completion_and_judge"
            )
        ]

    def __str__(self) -> str:
        return f"{self.judge} gives completion {self.completion_id} {self.reward:.3f}"


class JudgeCall(models.Model):
    """One judged item (a prompt and K of its completions): the cache of what a judge said,
    the failure record with the raw answer kept, and what it cost."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        FAILED = "failed", "Failed"

    class Mode(models.TextChoices):
        RATE = "rate", "Rate K completions"
        ANSWER = "answer", "Answer the question itself"
        REWRITE = "rewrite", "Rewrite a text"
        PAIRWISE = "pairwise", "Compare two completions"

    judge = models.ForeignKey(JudgeConfig, on_delete=models.PROTECT, related_name="calls")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.RATE)
    # Empty for a rewrite, which works on a text alone.
    prompt = models.ForeignKey(
        "datasets_app.Prompt",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="judge_calls",
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


class Campaign(models.Model):
    """A set of prompts (with the completions of chosen checkpoints) for people to rate."""

    name = models.CharField(max_length=200, unique=True)
    instructions = models.TextField(blank=True)
    overlap = models.PositiveSmallIntegerField(
        default=1, help_text="how many annotators rate each prompt"
    )
    is_active = models.BooleanField(default=True)
    show_judge_suggestions = models.BooleanField(
        default=False, help_text="show a judge's scores as hints (they anchor people: off)"
    )
    suggestion_judge = models.ForeignKey(
        JudgeConfig, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assignment_minutes = models.PositiveIntegerField(
        default=30, help_text="an item not submitted in this time goes back to the queue"
    )
    selection = models.JSONField(default=dict, blank=True)
    # Its items are made once, with the campaign: the annotation page reads the count here,
    # since counting a million items is what made that page slow.
    item_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(overlap__gte=1), name="campaign_overlap_at_least_one"
            )
        ]

    def __str__(self) -> str:
        return self.name


class CampaignItem(models.Model):
    """One prompt of a campaign, with the completions shown (in a fixed, shuffled order)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey(
        "datasets_app.Prompt", on_delete=models.CASCADE, related_name="campaign_items"
    )
    completion_ids = models.JSONField(default=list)
    # Assignments that hold a slot (assigned or submitted); never above the overlap.
    n_active = models.PositiveSmallIntegerField(default=0)
    n_submitted = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "prompt"], name="campaignitem_unique"),
        ]
        # The queue reads "free items, emptiest first, oldest first": this index gives that
        # order directly, so the next item costs the same with 100 or 100,000 items.
        indexes = [models.Index(fields=["campaign", "n_active", "id"], name="campaignitem_queue")]

    def __str__(self) -> str:
        return f"{self.campaign} / prompt {self.prompt_id}"


class Assignment(models.Model):
    """One annotator's turn at one item."""

    class Status(models.TextChoices):
        ASSIGNED = "assigned", "Assigned"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        FLAGGED = "flagged", "Flagged"
        EXPIRED = "expired", "Expired"

    HOLDS_SLOT = (Status.ASSIGNED, Status.SUBMITTED)

    item = models.ForeignKey(CampaignItem, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ASSIGNED)
    assigned_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    # The id the page sent with its last accepted submission: a retry with it is a no-op.
    submission_token = models.CharField(max_length=64, blank=True)
    flag_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-assigned_at"]
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="assignment_once_per_user"),
        ]
        indexes = [
            models.Index(fields=["annotator", "status"]),
            models.Index(fields=["status", "expires_at"]),
            models.Index(fields=["annotator", "submitted_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.item} ({self.status})"


class JudgeAudit(models.Model):
    """One reliability audit of a judge (issue 18.2): position bias, self-consistency and
    parse failures on a sample of items; the judge's page shows the latest as its card."""

    judge = models.ForeignKey(JudgeConfig, on_delete=models.CASCADE, related_name="audits")
    # The items (selection, limit, K per call), the orders and the repeats asked.
    params = models.JSONField(default=dict)
    # The `judge_audit --json` object, plus details (flips of each pick, calls, cost).
    result = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="judge_audits",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"audit of {self.judge} ({self.created_at:%Y-%m-%d %H:%M})"
