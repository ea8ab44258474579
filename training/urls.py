from django.urls import path

from training.views import evaluations, generation, labs, loops, trainings

app_name = "training"
urlpatterns = [
    path("generate/", generation.generation_launch, name="generate"),
    path("generate/estimate/", generation.generation_estimate, name="generate_estimate"),
    path("", trainings.training_list, name="trainings"),
    path("new/", trainings.training_new, name="training_new"),
    path("runs/<int:training_id>/", trainings.training_detail, name="training"),
    path("runs/<int:training_id>/live/", trainings.training_live, name="training_live"),
    path("evaluations/", evaluations.evaluation_list, name="evaluations"),
    path("evaluations/<int:run_id>/", evaluations.evaluation_detail, name="evaluation"),
    path(
        "evaluations/<int:run_id>/live/",
        evaluations.evaluation_live,
        name="evaluation_live",
    ),
    path("compare/", evaluations.compare, name="compare"),
    path("loops/", loops.loop_list, name="loops"),
    path("loops/<int:loop_id>/", loops.loop_detail, name="loop"),
    path("labs/", labs.lab_list, name="labs"),
    path("labs/<int:lab_id>/", labs.lab_detail, name="lab"),
    path("labs/<int:lab_id>/live/", labs.lab_live, name="lab_live"),
    path("labs/<int:lab_id>/resume/", labs.lab_resume, name="lab_resume"),
]
