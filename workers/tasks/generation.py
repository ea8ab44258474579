from __future__ import annotations

from celery import shared_task

from training.services import generation


@shared_task(name="workers.tasks.generation.run_generation", time_limit=48 * 3600, acks_late=True)
def run_generation(job_id: int) -> None:
    generation.generation_shard(job_id=job_id)
