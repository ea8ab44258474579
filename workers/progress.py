"""Run a job's body in a management command while another thread repaints its progress."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.core.management.base import CommandError
from django.db import connection

from workers.models import Job


def run_here_with_progress(
    job: Job, body: Callable[[], None], paint: Callable[[Job, str], None]
) -> Job:
    """Run `body` in this thread (it writes the job row) and call `paint(job, "\\r")` every
    half second from a second thread, then `paint(job, "\\n")`; raise CommandError unless
    the job succeeded."""
    stop = threading.Event()

    def repaint() -> None:
        try:
            while not stop.wait(0.5):
                paint(Job.objects.get(pk=job.pk), "\r")
        finally:
            connection.close()  # the painter's own connection

    painter = threading.Thread(target=repaint, daemon=True)
    painter.start()
    try:
        body()
    finally:
        stop.set()
        painter.join()
    job.refresh_from_db()
    paint(job, "\n")
    if job.status != Job.Status.SUCCEEDED:
        raise CommandError(f"job {job.pk} {job.status}: {job.error}")
    return job
