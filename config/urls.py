from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from api.rest import urls as api_urls
from config import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("ops/", include("workers.urls")),
    path("data/", include("datasets_app.urls")),
    path("train/", include("training.urls")),
    path("annotate/", include("annotation.urls")),
    # The REST API answers with 401/403 in JSON itself (api.rest), never a login redirect.
    path("api/", api_urls),
    path("account/", include("api.urls")),
    # Always through the access-checked view: it streams local files and redirects to a
    # signed URL for object storage (config.storage).
    re_path(r"^media/(?P<path>.*)$", views.media, name="media"),
]
