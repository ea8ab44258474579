from __future__ import annotations

import mimetypes

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import render

from config.access import access_is_curator, access_is_staff
from datasets_app.selectors import prompt_counts
from workers.selectors import recent_jobs


def home(request):
    context = {
        "is_staff": access_is_staff(request.user),
        "is_curator": access_is_curator(request.user),
        "counts": prompt_counts(),
        "jobs": recent_jobs(limit=5) if access_is_staff(request.user) else [],
    }
    return render(request, "home.html", context)


def media(request, path: str):
    """Media for the single-machine default (login required, like every page)."""
    if ".." in path.split("/") or not default_storage.exists(path):
        raise Http404("no such file")
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = FileResponse(default_storage.open(path, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    return response
