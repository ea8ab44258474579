"""The Job lifecycle that every long task uses: create, claim, progress, finish or fail.

A task body looks like::

    with job_running(job_id) as run:
        if run is None:      # someone else has it, or it already ended
            return
        run.set_total(len(items))
        for item in items:
            ...
            run.advance()    # progress + heartbeat; raises JobCancelled when asked to stop

Claiming is a conditional UPDATE (status=QUEUED -> RUNNING): if no row changed, another
worker has the job. A job found RUNNING at claim time was redelivered after its worker
died; unless the task says it can resume, it is marked failed instead of running twice.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError

from config.celery import CHOSEN_QUEUE_KINDS, JOB_TASKS, app
from workers.models import Job, JobChunk

LOG_TAIL_CHARS = 8000
ERROR_LINE_CHARS = 500
# Progress writes are throttled so that a fast loop does not hammer the database.
MIN_WRITE_INTERVAL_S = 1.0


class JobCancelled(Exception):
    """Raised inside a task when someone asked its job to stop."""


class JobFailed(Exception):
    """Raised inside a task for an expected failure (bad input): the message is the whole
    story for the user, so no traceback is logged and the task does not error."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_queue(kind: str) -> str:
    """The queue a job of `kind` runs on (config.celery.JOB_TASKS)."""
    if kind not in JOB_TASKS:
        known = ", ".join(JOB_TASKS)
        raise ValueError(f"no task runs {str(kind)!r} jobs; job kinds with a task: {known}")
    return JOB_TASKS[kind][1]


def job_create(
    *,
    kind: str,
    title: str = "",
    queue: str | None = None,
    params: dict[str, Any] | None = None,
    total: int = 0,
    created_by: Any = None,
) -> Job:
    """A queued job row, on its kind's queue. Only a self-test picks its queue (`queue`), since
    it exists to check that one; for any other kind a different queue would name a place the
    task is not routed to, so it is refused."""
    routed = job_queue(kind)
    if queue is not None and queue != routed and kind not in CHOSEN_QUEUE_KINDS:
        raise ValueError(f"{kind} jobs run on the {routed} queue, not {queue!r}")
    return Job.objects.create(
        kind=kind,
        title=title,
        queue=queue or routed,
        params=params or {},
        progress_total=total,
        created_by=created_by,
    )


def job_claim(job_id: int, *, resumable: bool = False) -> Job | None:
    """Move a queued job to running and return it; None when it is not ours to run."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
        status=Job.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=worker_name(),
        attempts=F("attempts") + 1,
    )
    if claimed:
        return Job.objects.get(pk=job_id)
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.status != Job.Status.RUNNING:
        return None
    # RUNNING already: a redelivery after the worker that had it died (acks_late).
    if resumable:
        Job.objects.filter(pk=job_id).update(
            heartbeat_at=now, worker=worker_name(), attempts=F("attempts") + 1
        )
        job.refresh_from_db()
        job_log(job, f"resumed by {worker_name()} after an interrupted attempt")
        return job
    job_fail(job, "the worker running this job stopped; it was not restarted to avoid a rerun")
    return None


def job_log_append(job: Job, lines: list[str]) -> None:
    """Add time-stamped lines to the job's log tail in memory; the caller saves the row."""
    stamp = timezone.now().strftime("%H:%M:%S")
    added = "".join(f"[{stamp}] {line}\n" for line in lines)
    job.log_tail = (job.log_tail + added)[-LOG_TAIL_CHARS:]


def job_log(job: Job, line: str) -> None:
    job_log_append(job, [line])
    job.save(update_fields=["log_tail"])


def job_progress(job: Job, *, done: int | None = None, total: int | None = None) -> None:
    """Record progress and a heartbeat; raise JobCancelled when a cancel was requested."""
    fields = ["heartbeat_at"]
    job.heartbeat_at = timezone.now()
    if total is not None:
        job.progress_total = total
        fields.append("progress_total")
    if done is not None:
        job.progress_done = min(done, job.progress_total) if job.progress_total else done
        fields.append("progress_done")
    job.save(update_fields=fields)
    if Job.objects.filter(pk=job.pk, cancel_requested=True).exists():
        raise JobCancelled


def job_finish(job: Job, *, metrics: dict[str, Any] | None = None) -> None:
    job.status = Job.Status.SUCCEEDED
    job.finished_at = timezone.now()
    job.heartbeat_at = job.finished_at
    if job.progress_total:
        job.progress_done = job.progress_total
    fields = ["status", "finished_at", "heartbeat_at", "progress_done"]
    if metrics is not None:
        job.metrics = {**job.metrics, **metrics}
        fields.append("metrics")
    job.save(update_fields=fields)


def error_summary(text: str) -> str:
    """The first non-empty line of an error message, cut to a length a page can show."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= ERROR_LINE_CHARS else line[: ERROR_LINE_CHARS - 1] + "…"


def job_fail(job: Job, error: str, *, detail: str = "") -> None:
    """Record the failure: one line for whoever may see the job, and the rest (a traceback,
    a runner's stderr) for staff, since it names paths and code that users need not see."""
    summary, full = error_summary(error), error.strip()
    rest = "\n\n".join(part for part in (full if full != summary else "", detail) if part)
    job.status = Job.Status.FAILED
    job.error = summary
    job.error_detail = rest[-LOG_TAIL_CHARS:]
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "error_detail", "finished_at"])


def job_mark_cancelled(job: Job) -> None:
    job.status = Job.Status.CANCELLED
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])


def job_request_cancel(*, job: Job) -> None:
    """Ask a job to stop: a queued job ends now, a running one at its next progress call."""
    with transaction.atomic():
        Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.CANCELLED, finished_at=timezone.now(), cancel_requested=True
        )
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True)
        # A sharded job with no chunk on a worker has nobody to see the request: it ends now.
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, chunks__isnull=False).exclude(
            chunks__status=JobChunk.Status.RUNNING
        ).update(status=Job.Status.CANCELLED, finished_at=timezone.now())
    job.refresh_from_db()


def jobs_fail_stale(*, now: Any = None) -> int:
    """Mark running jobs whose heartbeat stopped as failed; return how many.

    Sharded jobs are left out: their chunks may wait in the queue behind other work, and a
    chunk whose worker died is sent again (workers.chunks.chunks_requeue_stale)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_STALE_AFTER_S)
    stale = Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=cutoff)
    return stale.exclude(pk__in=JobChunk.objects.values("job_id")).update(
        status=Job.Status.FAILED,
        finished_at=now,
        error=f"no heartbeat for over {settings.JOB_STALE_AFTER_S} s: the worker died",
    )


class JobRun:
    """The handle a task body uses while its job runs."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._last_write = 0.0

    def set_total(self, total: int) -> None:
        job_progress(self.job, total=total)

    def restart(self, total: int) -> None:
        """Count again from nothing: a resumed body recounts what it skips."""
        job_progress(self.job, done=0, total=total)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.job.metrics

    def advance(self, n: int = 1, *, force: bool = False) -> None:
        self.job.progress_done += n
        now = timezone.now().timestamp()
        last = self.job.progress_done >= self.job.progress_total
        if force or last or now - self._last_write >= MIN_WRITE_INTERVAL_S:
            self._last_write = now
            job_progress(self.job, done=self.job.progress_done)

    def log(self, line: str) -> None:
        job_log(self.job, line)

    def set_metrics(self, **metrics: Any) -> None:
        self.job.metrics = {**self.job.metrics, **metrics}
        self.job.save(update_fields=["metrics"])


@contextmanager
def job_running(job_id: int, *, resumable: bool = False) -> Iterator[JobRun | None]:
    """Claim the job, run the body, and record how it ended, whatever happens."""
    job = job_claim(job_id, resumable=resumable)
    if job is None:
        yield None
        return
    run = JobRun(job)
    try:
        yield run
    except JobCancelled:
        job_log(job, "cancelled")
        job_mark_cancelled(job)
    except JobFailed as exc:
        job_fail(job, str(exc))
    except Exception as exc:
        job_fail(job, f"{type(exc).__name__}: {exc}", detail=traceback.format_exc(limit=20))
        raise
    else:
        job_finish(job)


def job_enqueue(job: Job) -> None:
    """Send the task of the job's kind (config.celery.JOB_TASKS), by name, with `job.pk`, to
    `job.queue`, once the surrounding transaction commits.

    By name, so that a service never imports the task module that imports it back. If the
    broker cannot be reached the job is marked failed with that reason, so that nobody waits
    on a job that was never sent (and nothing runs in the web request).
    """
    task_name = JOB_TASKS[job.kind][0]

    def send() -> None:
        try:
            app.send_task(task_name, args=[job.pk], queue=job.queue)
        except OperationalError as exc:
            job_fail(job, f"could not reach the broker to start this job: {exc}")

    transaction.on_commit(send)
