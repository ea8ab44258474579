from django.urls import path

from workers import views

app_name = "workers"
urlpatterns = [
    path("status/", views.status, name="status"),
    path("selftest/", views.selftest, name="selftest"),
    path("jobs/<int:job_id>/", views.job_detail, name="job"),
    path("jobs/<int:job_id>/progress/", views.job_progress, name="job_progress"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:job_id>/resume/", views.job_resume, name="job_resume"),
]
