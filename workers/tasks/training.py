from __future__ import annotations

from celery import shared_task

from training.services import trainings


# acks_late: a worker that dies mid-run leaves the message for another, whose claim sees the
# job RUNNING and resumes it from the last checkpoint (the task is resumable).
@shared_task(name="workers.tasks.training.run_training", time_limit=14 * 24 * 3600, acks_late=True)
def run_training(job_id: int) -> None:
    trainings.training_run(job_id=job_id)
