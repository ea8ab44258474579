from django.urls import path

from datasets_app import version_views, views

app_name = "datasets_app"
urlpatterns = [
    path("prompts/", views.prompt_list, name="prompts"),
    path("prompts/<int:prompt_id>/", views.prompt_detail, name="prompt"),
    path("import/", views.import_prompts, name="import"),
    path("versions/", version_views.version_list, name="versions"),
    path("versions/new/", version_views.version_new, name="version_new"),
    path("versions/<int:version_id>/", version_views.version_detail, name="version"),
    path("versions/<int:version_id>/export/", version_views.version_export, name="version_export"),
    path(
        "versions/<int:version_id>/diff/<int:other_id>/",
        version_views.version_diff,
        name="version_diff",
    ),
]
