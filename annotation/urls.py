from django.urls import path

from annotation import views

app_name = "annotation"
urlpatterns = [
    path("agreement/", views.agreement_page, name="agreement"),
    path("judge/", views.judge_launch, name="judge"),
]
