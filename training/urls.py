from django.urls import path

from training import training_views, views

app_name = "training"
urlpatterns = [
    path("generate/", views.generation_launch, name="generate"),
    path("generate/estimate/", views.generation_estimate, name="generate_estimate"),
    path("", training_views.training_list, name="trainings"),
    path("new/", training_views.training_new, name="training_new"),
    path("runs/<int:training_id>/", training_views.training_detail, name="training"),
    path("runs/<int:training_id>/live/", training_views.training_live, name="training_live"),
]
