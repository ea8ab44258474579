"""Writes for jobs and queues."""

from __future__ import annotations

from typing import Any

from config.celery import QUEUES
from workers.jobs import job_create, job_enqueue, job_running
from workers.models import Job

SELFTEST_STEPS = 5


def selftest_enqueue(*, queue: str, user: Any = None) -> Job:
    """Send a small job through `queue` to check that a worker consumes it end to end."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; queues are {', '.join(QUEUES)}")
    job = job_create(
        kind=Job.Kind.SELFTEST,
        title=f"self-test of queue {queue}",
        queue=queue,
        total=SELFTEST_STEPS,
        created_by=user,
    )
    job_enqueue(job)
    return job


def selftest_run(*, job_id: int) -> None:
    with job_running(job_id) as run:
        if run is None:
            return
        for step in range(SELFTEST_STEPS):
            run.advance(force=True)
            run.log(f"step {step + 1}/{SELFTEST_STEPS}")
        run.set_metrics(worker=run.job.worker)


# Kinds whose task skips work already done, so a failed or cancelled job can go again
# (training from its last checkpoint; the sharded kinds with their unfinished chunks).
RESUMABLE_KINDS = frozenset(
    {Job.Kind.GENERATION, Job.Kind.JUDGING, Job.Kind.EVALUATION, Job.Kind.TRAINING}
)


def job_resume(*, job: Job) -> Job:
    """Queue a failed or cancelled job again; its task picks up where it stopped."""
    if job.kind not in RESUMABLE_KINDS:
        raise ValueError(f"{job.get_kind_display()} jobs cannot be resumed; launch a new one")
    resumed = Job.objects.filter(
        pk=job.pk, status__in=[Job.Status.FAILED, Job.Status.CANCELLED]
    ).update(
        status=Job.Status.QUEUED,
        cancel_requested=False,
        error="",
        error_detail="",
        finished_at=None,
    )
    if not resumed:
        raise ValueError(f"job #{job.pk} is {job.status}: only failed or cancelled jobs resume")
    job.refresh_from_db()
    job_enqueue(job)
    return job
