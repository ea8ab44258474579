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
