"""Object storage whose links point at the access-checked media view.

django-storages' `S3Storage.url` signs a URL for the object itself; a page that rendered it
would hand the file to whoever holds the link, whatever their role. Here `url()` is the
media view's address (what `FieldFile.url`, templates and the admin call), and the view,
after its access check, redirects to `signed_url()`, valid for MEDIA_SIGNED_URL_SECONDS.

Uploads (`save`) go through boto3's `upload_fileobj`, which sends a file larger than
S3_MULTIPART_THRESHOLD as a multipart upload in S3_MULTIPART_CHUNKSIZE parts, several at a
time: a multi-gigabyte export neither sits in memory nor restarts whole after one bad part.
"""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from storages.backends.s3 import S3Storage

# S3 refuses a part under 5 MiB, except an upload's last one.
S3_MIN_PART_BYTES = 5 * 1024 * 1024


class AccessCheckedS3Storage(S3Storage):
    def get_default_settings(self):
        defaults = super().get_default_settings()
        if defaults.get("transfer_config") is None:  # AWS_S3_TRANSFER_CONFIG wins if set
            defaults["transfer_config"] = multipart_transfer_config()
        return defaults

    def url(self, name, parameters=None, expire=None, http_method=None):
        return f"{settings.MEDIA_URL_PATH}{quote(name)}"

    def signed_url(self, name: str, *, expire: int) -> str:
        return super().url(name, expire=expire)


def multipart_transfer_config():
    """boto3's TransferConfig from the S3_MULTIPART_* settings, refused loudly when S3 would
    refuse its parts (only after the first part had gone up)."""
    from boto3.s3.transfer import TransferConfig

    threshold = settings.S3_MULTIPART_THRESHOLD
    chunksize = settings.S3_MULTIPART_CHUNKSIZE
    if chunksize < S3_MIN_PART_BYTES:
        raise ImproperlyConfigured(
            f"S3_MULTIPART_CHUNKSIZE={chunksize} is under S3's smallest part "
            f"({S3_MIN_PART_BYTES} bytes)"
        )
    if threshold < 1:
        raise ImproperlyConfigured(f"S3_MULTIPART_THRESHOLD={threshold} must be positive")
    return TransferConfig(multipart_threshold=threshold, multipart_chunksize=chunksize)
