"""The response for a stored file, after `config.media`'s access check: streamed from local
storage, or a redirect to a short-lived signed URL for object storage. The media view and
the REST API's downloads both answer through `stored_file_response`, so they cannot drift."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect

from config.media import MediaAccess, clean_media_key, media_access


def stored_file_response(user: Any, path: str) -> HttpResponse:
    """The file at storage path `path` for `user`; PermissionDenied when their role may not
    read this kind of file, Http404 when it is someone else's or not there."""
    key = clean_media_key(path)
    if key is None:
        raise Http404("no such file")
    access = media_access(user, key)
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
