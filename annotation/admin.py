from django.contrib import admin

from annotation.models import Completion, JudgeConfig, PairPick, Rating


@admin.register(Completion)
class CompletionAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "checkpoint", "template", "sample_index", "short_text"]
    list_filter = ["checkpoint", "template"]
    search_fields = ["text"]
    list_select_related = ["prompt", "checkpoint"]
    raw_id_fields = ["prompt", "job"]

    @admin.display(description="text")
    def short_text(self, obj: Completion) -> str:
        return obj.text[:80]


@admin.register(JudgeConfig)
class JudgeConfigAdmin(admin.ModelAdmin):
    list_display = ["name", "provider", "model", "prompt_version", "temperature"]
    list_filter = ["provider", "prompt_version"]
    search_fields = ["name", "model"]


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "completion",
        "rater",
        "helpfulness",
        "correctness",
        "coherence",
        "complexity",
        "verbosity",
    ]
    list_filter = ["judge"]
    list_select_related = ["completion", "user", "judge"]
    raw_id_fields = ["completion", "job"]

    @admin.display(description="rater")
    def rater(self, obj: Rating) -> str:
        return obj.rater_label


@admin.register(PairPick)
class PairPickAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "annotator", "chosen", "rejected", "is_tie"]
    list_filter = ["is_tie"]
    list_select_related = ["prompt", "annotator", "chosen", "rejected"]
    raw_id_fields = ["prompt", "chosen", "rejected"]
