from __future__ import annotations

from celery import shared_task

from datasets_app.services import exports


@shared_task(name="workers.tasks.exports.run_export", time_limit=12 * 3600, acks_late=True)
def run_export(job_id: int) -> None:
    exports.export_job_run(job_id=job_id)
