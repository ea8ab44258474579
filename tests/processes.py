"""Helpers for tests that start other processes (workers, task bodies) on the test database."""

from __future__ import annotations

from django.db import connection


def database_url() -> str:
    """The URL of the test database this process uses, for the subprocesses."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def celery_worker_argv(name: str, *, queue: str = "gpu", log_level: str = "") -> list[str]:
    """A one-process Celery worker on `queue`, as the tests start it (no gossip, mingle or
    heartbeat chatter between the workers of a test)."""
    import sys

    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue]
    argv += ["-c", "1", "-P", "solo", "-n", f"{name}@%h"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv + (["-l", log_level] if log_level else [])


def settings_in_subprocess(env: dict[str, str], expr: str) -> str:
    """`expr` over `config.settings as s`, printed by a fresh Python with `env` added: what a
    process started with those variables would read."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-c", f"import config.settings as s; print({expr})"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
