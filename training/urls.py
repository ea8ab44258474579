from django.urls import path

from training import evaluation_views, training_views, views

app_name = "training"
urlpatterns = [
    path("generate/", views.generation_launch, name="generate"),
    path("generate/estimate/", views.generation_estimate, name="generate_estimate"),
    path("", training_views.training_list, name="trainings"),
    path("new/", training_views.training_new, name="training_new"),
    path("runs/<int:training_id>/", training_views.training_detail, name="training"),
    path("runs/<int:training_id>/live/", training_views.training_live, name="training_live"),
    path("evaluations/", evaluation_views.evaluation_list, name="evaluations"),
    path("evaluations/<int:run_id>/", evaluation_views.evaluation_detail, name="evaluation"),
    path(
        "evaluations/<int:run_id>/live/",
        evaluation_views.evaluation_live,
        name="evaluation_live",
    ),
    path("compare/", evaluation_views.compare, name="compare"),
]
