from __future__ import annotations

from celery import shared_task

from annotation.services import judging


@shared_task(name="workers.tasks.judging.run_judging", time_limit=48 * 3600, acks_late=True)
def run_judging(job_id: int) -> None:
    judging.judge_shard(job_id=job_id)
