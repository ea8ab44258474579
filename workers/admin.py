from django.contrib import admin, messages

from workers.jobs import job_request_cancel
from workers.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "title", "status", "queue", "progress", "created_at"]
    list_filter = ["kind", "status", "queue"]
    search_fields = ["title", "error"]
    readonly_fields = ["created_at", "started_at", "heartbeat_at", "finished_at", "worker"]
    actions = ["cancel_jobs"]

    @admin.display(description="progress")
    def progress(self, obj: Job) -> str:
        return f"{obj.progress_done}/{obj.progress_total}"

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request, queryset):
        for job in queryset:
            job_request_cancel(job=job)
        self.message_user(request, f"cancel requested for {queryset.count()} jobs", messages.INFO)
