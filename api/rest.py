"""The REST API (django-ninja): token-authenticated endpoints over the same services as the
pages, its OpenAPI schema at /api/openapi.json and browsable docs at /api/docs.

The docs page is served from ninja's own static files ("ninja" in INSTALLED_APPS), never
from a CDN. Every endpoint names the roles that may call it (api.auth); every refused input
is a 400 with field-level messages (api.errors).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.urls import URLPattern, URLResolver
from ninja import NinjaAPI
from ninja.errors import ValidationError

from api.endpoints import data, jobs, ratings, versions

api = NinjaAPI(
    title="Preference studio API",
    version="1",
    description=(
        "Send `Authorization: Bearer TOKEN` (make one on /account/tokens/ or with "
        "`manage.py api_token USERNAME`). A token acts with its user's roles, as the pages do. "
        "Refused input: 400 with `detail`, a list of `{loc, msg}`."
    ),
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url="/docs",
)
api.add_router("", data.router)
api.add_router("", ratings.router)
api.add_router("", versions.router)
api.add_router("", jobs.router)


@api.exception_handler(ValidationError)
def _bad_input(request, exc: ValidationError):
    # 400, not ninja's 422: a refused input is a bad request, as on the pages.
    return api.create_response(request, {"detail": [_located(e) for e in exc.errors]}, status=400)


def _located(error: dict) -> dict:
    """pydantic's errors name the endpoint's parameter after "body" (`body.body.k`); the
    forms' and services' say `body.k`: one shape for both."""
    loc = list(error.get("loc") or [])
    if loc[:2] == ["body", "body"]:
        loc = loc[1:]
    return {**error, "loc": loc}


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc: PermissionDenied):
    return api.create_response(request, {"detail": str(exc) or "Forbidden"}, status=403)


def _open(patterns: list) -> list:
    """The API answers anonymous requests itself (401 in JSON, public schema and docs), so
    the project's LoginRequiredMiddleware must not send them to the login page."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            _open(entry.url_patterns)
        elif isinstance(entry, URLPattern):
            login_not_required(entry.callback)
    return patterns


_patterns, _app_name, _namespace = api.urls
urls = (_open(_patterns), _app_name, _namespace)
