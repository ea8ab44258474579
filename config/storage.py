"""Object storage whose links point at the access-checked media view.

django-storages' `S3Storage.url` signs a URL for the object itself; a page that rendered it
would hand the file to whoever holds the link, whatever their role. Here `url()` is the
media view's address (what `FieldFile.url`, templates and the admin call), and the view,
after its access check, redirects to `signed_url()`, valid for MEDIA_SIGNED_URL_SECONDS.
"""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from storages.backends.s3 import S3Storage


class AccessCheckedS3Storage(S3Storage):
    def url(self, name, parameters=None, expire=None, http_method=None):
        return f"{settings.MEDIA_URL_PATH}{quote(name)}"

    def signed_url(self, name: str, *, expire: int) -> str:
        return super().url(name, expire=expire)
