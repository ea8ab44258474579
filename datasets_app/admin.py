from typing import Any

from django.contrib import admin
from django.utils.html import format_html

from datasets_app.models import DatasetVersion, Prompt, PromptImage, Source


def image_thumbnail(prompt: Prompt, height: int = 48) -> str:
    if not prompt.image:
        return "(text only)"
    return format_html(
        '<img src="{}" alt="prompt {} image" style="max-height:{}px;max-width:{}px">',
        prompt.image.url,
        prompt.pk,
        height,
        height * 2,
    )


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "rows_total", "rows_imported", "rows_rejected", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "file_name"]
    readonly_fields = ["file_sha256", "report", "created_at", "updated_at"]


class PromptImageInline(admin.TabularInline):
    """A conversation's second and later images, read-only (imports write them)."""

    model = PromptImage
    extra = 0
    can_delete = False
    readonly_fields = ["position", "image", "image_sha256", "image_width", "image_height"]

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    inlines = [PromptImageInline]
    list_display = ["id", "thumbnail", "short_question", "source", "subject", "split"]
    list_display_links = ["id", "short_question"]
    list_filter = ["source", "split", "subject"]
    search_fields = ["question", "reference_answer", "content_hash"]
    list_select_related = ["source"]
    readonly_fields = ["preview", "image_sha256", "content_hash", "created_at"]
    list_per_page = 50

    @admin.display(description="image")
    def thumbnail(self, obj: Prompt) -> str:
        return image_thumbnail(obj)

    @admin.display(description="preview")
    def preview(self, obj: Prompt) -> str:
        return image_thumbnail(obj, height=256)

    @admin.display(description="question")
    def short_question(self, obj: Prompt) -> str:
        return obj.question[:80]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "kind", "strategy", "status", "row_count", "created_at"]
    list_filter = ["kind", "status", "strategy"]
    search_fields = ["name", "checksum"]
    filter_horizontal = ["sources"]
