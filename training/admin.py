from django.contrib import admin

from training.models import Checkpoint, EvaluationRun, TrainingJob


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "model_path", "adapter_path", "parent", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "model_path"]
    list_select_related = ["parent"]


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["name", "recipe", "base_checkpoint", "dataset_version", "job", "created_at"]
    list_filter = ["recipe"]
    list_select_related = ["base_checkpoint", "dataset_version", "job"]


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    list_display = ["task", "checkpoint", "job", "created_at"]
    list_filter = ["task"]
    list_select_related = ["checkpoint", "job"]
