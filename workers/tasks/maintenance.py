from __future__ import annotations

from celery import shared_task

from workers.chunks import chunks_requeue_stale
from workers.jobs import jobs_fail_stale


@shared_task(name="workers.tasks.maintenance.reap_stale_jobs", time_limit=60)
def reap_stale_jobs() -> None:
    jobs_fail_stale()
    chunks_requeue_stale()


@shared_task(name="workers.tasks.maintenance.expire_assignments", time_limit=60)
def expire_assignments() -> None:
    from annotation.services.campaigns import assignments_expire

    assignments_expire()
