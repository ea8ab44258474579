from __future__ import annotations

from celery import shared_task

from training.services import lab


# acks_late and resumable: a worker that dies mid-lab leaves the message for another, whose
# claim sees the job running and goes on from what the lab's record says is done.
@shared_task(name="workers.tasks.lab.run_lab", time_limit=14 * 24 * 3600, acks_late=True)
def run_lab(job_id: int) -> None:
    lab.lab_run(job_id=job_id)
