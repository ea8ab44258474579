"""Helpers for tests that start other processes (workers, task bodies) on the test database."""

from __future__ import annotations

from django.db import connection


def database_url() -> str:
    """The URL of the test database this process uses, for the subprocesses."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
