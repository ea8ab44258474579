"""Object storage for tests: the real S3 SDK (boto3, django-storages) against moto's S3
server on 127.0.0.1, as `default_storage` (a shared fixture: tests/conftest.py imports it)."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

BUCKET = "studio"


class S3(NamedTuple):
    storage: Any  # config.storage.AccessCheckedS3Storage, also default_storage
    endpoint: str
    client: Any  # a boto3 S3 client on the same server, to look at objects directly


def fresh_default_storage() -> Any:
    """default_storage built again from the settings (after a test changed them)."""
    from django.core.files.storage import storages

    storages._storages.pop("default", None)
    return storages["default"]


def _multipart_objects_private_as_in_s3(monkeypatch) -> None:
    """S3 makes every new object private to its owner, however it was uploaded. moto 5
    gives an object PUT without an ACL header its bucket's (private) ACL, but leaves one
    from a multipart upload without any, which it then serves to anonymous requests: here a
    multipart upload without an ACL header takes the bucket's ACL too, as its PUT does."""
    from moto.s3.models import S3Backend

    create = S3Backend.create_multipart_upload

    def create_multipart_upload(self, bucket_name, key_name, metadata, storage, tags, acl, *rest):
        if acl is None:
            acl = self.get_bucket(bucket_name).acl
        return create(self, bucket_name, key_name, metadata, storage, tags, acl, *rest)

    monkeypatch.setattr(S3Backend, "create_multipart_upload", create_multipart_upload)


@pytest.fixture
def s3_storage(settings, monkeypatch, tmp_path):
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port  # conftest imports this module

    _multipart_objects_private_as_in_s3(monkeypatch)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "config.storage.AccessCheckedS3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": endpoint,
                "querystring_auth": True,
                "signature_version": "s3v4",
                "default_acl": None,
                "file_overwrite": False,  # as config/settings.py sets it
            },
        },
    }
    settings.MEDIA_SIGNED_URL_SECONDS = 120
    # Nothing may come from or go to local media: point it at a folder that never exists.
    settings.MEDIA_ROOT = tmp_path / "no-local-media"
    yield S3(fresh_default_storage(), endpoint, client)
    from django.core.files.storage import storages

    storages._storages.pop("default", None)
    server.stop()
