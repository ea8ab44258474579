from __future__ import annotations

from celery import shared_task

from training.services import evaluations


@shared_task(name="workers.tasks.evaluation.run_evaluation", time_limit=48 * 3600, acks_late=True)
def run_evaluation(job_id: int) -> None:
    evaluations.evaluation_shard(job_id=job_id)
