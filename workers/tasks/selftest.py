from __future__ import annotations

from celery import shared_task

from workers import services


@shared_task(name="workers.tasks.selftest.run_selftest", time_limit=120, acks_late=True)
def run_selftest(job_id: int) -> None:
    services.selftest_run(job_id=job_id)
