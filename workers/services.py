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
    from workers.tasks.selftest import run_selftest

    job = job_create(
        kind=Job.Kind.SELFTEST,
        title=f"self-test of queue {queue}",
        queue=queue,
        total=SELFTEST_STEPS,
        created_by=user,
    )
    job_enqueue(job, run_selftest)
    return job


def selftest_run(*, job_id: int) -> None:
    with job_running(job_id) as run:
        if run is None:
            return
        for step in range(SELFTEST_STEPS):
            run.advance(force=True)
            run.log(f"step {step + 1}/{SELFTEST_STEPS}")
        run.set_metrics(worker=run.job.worker)


# Kinds whose task skips work already done, so a failed or cancelled job can go again.
RESUMABLE_TASKS = {
    Job.Kind.GENERATION: "workers.tasks.generation.run_generation",
    Job.Kind.JUDGING: "workers.tasks.judging.run_judging",
    Job.Kind.TRAINING: "workers.tasks.training.run_training",  # from the last checkpoint
}


def job_resume(*, job: Job) -> Job:
    """Queue a failed or cancelled job again; its task picks up where it stopped."""
    from config.celery import app

    if job.kind not in RESUMABLE_TASKS:
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
    job_enqueue(job, app.signature(RESUMABLE_TASKS[job.kind]))
    return job
