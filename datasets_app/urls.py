from django.urls import path

from datasets_app import views

app_name = "datasets_app"
urlpatterns = [
    path("prompts/", views.prompt_list, name="prompts"),
    path("prompts/<int:prompt_id>/", views.prompt_detail, name="prompt"),
    path("import/", views.import_prompts, name="import"),
]
