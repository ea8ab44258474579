from django.urls import path

from training import views

app_name = "training"
urlpatterns = [
    path("generate/", views.generation_launch, name="generate"),
    path("generate/estimate/", views.generation_estimate, name="generate_estimate"),
]
