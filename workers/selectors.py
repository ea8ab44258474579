"""Reads for the operations pages: database, broker and live workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from config.celery import QUEUES, app
from workers.models import JobChunk


@dataclass
class SystemStatus:
    database_ok: bool
    database_detail: str
    broker_ok: bool
    broker_detail: str
    workers_by_queue: dict[str, list[str]] = field(default_factory=dict)


def _database_status() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, f"{connection.vendor} ({connection.settings_dict['NAME']})"
    except Exception as exc:  # the page reports any failure instead of crashing
        return False, f"{type(exc).__name__}: {exc}"


def _broker_status() -> tuple[bool, str]:
    kind = "redis" if settings.REDIS_URL else "embedded filesystem broker"
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, kind
    except Exception as exc:
        return False, f"{kind}: {type(exc).__name__}: {exc}"


def _workers_by_queue(timeout: float) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {q: [] for q in QUEUES}
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    for worker, queues in sorted(replies.items()):
        for queue in queues:
            by_queue.setdefault(queue["name"], []).append(worker)
    return by_queue


def system_status(*, inspect_timeout: float = 1.0) -> SystemStatus:
    db_ok, db_detail = _database_status()
    broker_ok, broker_detail = _broker_status()
    workers = _workers_by_queue(inspect_timeout) if broker_ok else {q: [] for q in QUEUES}
    return SystemStatus(db_ok, db_detail, broker_ok, broker_detail, workers)


def recent_jobs(*, limit: int = 20) -> list:
    from workers.models import Job

    return list(Job.objects.select_related("created_by").order_by("-created_at")[:limit])


def access_job(user, job_id: int):
    """The job if this user may see it: staff see every job, others the jobs they started."""
    from django.core.exceptions import PermissionDenied
    from django.shortcuts import get_object_or_404

    from config.access import access_is_staff
    from workers.models import Job

    job = get_object_or_404(Job, pk=job_id)
    if not (access_is_staff(user) or (user.is_authenticated and job.created_by_id == user.pk)):
        raise PermissionDenied
    return job


def job_shards(job: Any) -> dict[str, Any] | None:
    """A sharded job's chunks: how many in each state, and the workers on them now; None
    for a job that runs whole."""
    rows = list(job.chunks.values_list("status", "worker"))
    if not rows:
        return None
    counts = {status: 0 for status in JobChunk.Status.values}
    for status, _ in rows:
        counts[status] += 1
    running = sorted({worker for status, worker in rows if status == JobChunk.Status.RUNNING})
    return {"total": len(rows), **counts, "workers": running}
