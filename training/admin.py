from django.contrib import admin

from training.models import Checkpoint, EvaluationRun, LoopRun, TrainingJob


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


@admin.register(LoopRun)
class LoopRunAdmin(admin.ModelAdmin):
    """Read-only: a record is written by `run_loop` through training.services.loop_runs."""

    list_display = ["tag", "status", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["tag"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
