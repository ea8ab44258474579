from django.urls import path

from datasets_app.views import prompts, versions

app_name = "datasets_app"
urlpatterns = [
    path("prompts/", prompts.prompt_list, name="prompts"),
    path("prompts/<int:prompt_id>/", prompts.prompt_detail, name="prompt"),
    path("import/", prompts.import_prompts, name="import"),
    path("versions/", versions.version_list, name="versions"),
    path("versions/new/", versions.version_new, name="version_new"),
    path("versions/<int:version_id>/", versions.version_detail, name="version"),
    path("versions/<int:version_id>/export/", versions.version_export, name="version_export"),
    path(
        "versions/<int:version_id>/diff/<int:other_id>/",
        versions.version_diff,
        name="version_diff",
    ),
]
