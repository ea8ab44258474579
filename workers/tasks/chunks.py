from __future__ import annotations

from celery import shared_task
from django.conf import settings

# The services of the sharded kinds register their chunk bodies when imported.
from annotation.services import judging  # noqa: F401
from training.services import evaluations, generation  # noqa: F401
from workers.chunks import CHUNK_TASK, ChunkBusy, chunk_run


@shared_task(bind=True, name=CHUNK_TASK, time_limit=12 * 3600, acks_late=True)
def run_chunk(self, chunk_id: int) -> None:
    try:
        chunk_run(chunk_id, beat=True)
    except ChunkBusy as exc:
        # Another live worker holds it; look again once it could have died.
        raise self.retry(exc=exc, countdown=settings.JOB_CHUNK_STALE_S, max_retries=None) from None
