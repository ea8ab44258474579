from __future__ import annotations

import mimetypes
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render

from config.access import access_is_curator, access_is_staff
from config.media import MediaAccess, clean_media_key, media_access
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
    key = clean_media_key(path)
    if key is None:
        raise Http404("no such file")
    access = media_access(request.user, key)
    if access is MediaAccess.FORBIDDEN:
        raise PermissionDenied
    if access is MediaAccess.HIDDEN:
        raise Http404("no such file")
    signed_url = getattr(default_storage, "signed_url", None)
    if signed_url is not None:
        if not default_storage.exists(key):
            raise Http404("no such file")
        return redirect(signed_url(key, expire=settings.MEDIA_SIGNED_URL_SECONDS))
    local = Path(default_storage.path(key))
    if not local.is_file():  # a folder, or nothing: never a traceback
        raise Http404("no such file")
    content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    response = FileResponse(local.open("rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    return response
