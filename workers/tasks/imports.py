from __future__ import annotations

from celery import shared_task

from datasets_app.services import imports


@shared_task(name="workers.tasks.imports.run_import", time_limit=6 * 3600, acks_late=True)
def run_import(job_id: int) -> None:
    imports.prompts_import_job_run(job_id=job_id)
