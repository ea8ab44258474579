"""A task goes through a real Redis broker to a real worker process and updates its Job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import celery_worker_argv, database_url
from workers.models import Job

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent


def _env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url(),
        "VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    }


def test_selftest_job_travels_through_redis_to_a_worker(redis_url, tmp_path):
    env = _env(redis_url, tmp_path)
    worker = subprocess.Popen(
        celery_worker_argv("testgpu"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sent = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "selftest",
                "--queue",
                "gpu",
                "--wait",
                "--timeout",
                "60",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
    finally:
        worker.terminate()
        log = worker.communicate(timeout=30)[0]
    job = Job.objects.get()
    assert job.status == Job.Status.SUCCEEDED, log
    assert (job.queue, job.progress_done, job.progress_total) == ("gpu", 5, 5)
    assert job.worker.endswith(f":{worker.pid}")  # the worker process ran it, not us


def test_a_job_sent_to_an_unconsumed_queue_waits_and_the_command_says_so(redis_url, tmp_path):
    env = _env(redis_url, tmp_path)
    sent = subprocess.run(
        [sys.executable, "manage.py", "selftest", "--queue", "judge", "--wait", "--timeout", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode != 0
    assert "no worker consumed queue judge" in sent.stderr
    assert Job.objects.get().status == Job.Status.QUEUED
