"""The account pages (tokens). The REST API itself is mounted from api/rest.py."""

from django.urls import path

from api import views

app_name = "account"
urlpatterns = [
    path("tokens/", views.token_list, name="tokens"),
    path("tokens/<str:prefix>/revoke/", views.token_revoke, name="token_revoke"),
]
