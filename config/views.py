from __future__ import annotations

from django.shortcuts import render

from config.access import access_is_curator, access_is_staff
from config.downloads import stored_file_response
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
    """Stored files, after the same access checks as the pages (`config.media`). Local
    storage is streamed from here; object storage gets a redirect to a short-lived signed
    URL, so that no page links to an object directly."""
    return stored_file_response(request.user, path)
