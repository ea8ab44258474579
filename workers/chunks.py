"""Sharded jobs: a job's items split into chunks that any worker on its queue may run.

The job's own task plans the chunks (once) and sends one chunk task per unfinished chunk;
each chunk task runs the kind's body on its items::

    job task:    job_fan_out(job_id, plan)           -> chunk tasks on job.queue
    chunk task:  with chunk_running(chunk_id) as run: body(run)

A command or a test runs the same chunks one after another in its own process
(`job_run_here`), so a job gives the same rows however many workers share it.

Chunk states: queued -> running -> done. A chunk whose worker died stays running with an
old heartbeat: the broker delivers its task again (acks_late) or the reaper sends it again
(`chunks_requeue_stale`), and the next worker takes it over after JOB_CHUNK_STALE_S. A
second message for a chunk a live worker holds is put back for later, never run twice at
once. Cancel, failure and completion are decided on the Job row, which every chunk reads at
each heartbeat.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from workers.jobs import (
    MIN_WRITE_INTERVAL_S,
    JobCancelled,
    JobFailed,
    job_claim,
    job_fail,
    job_finish,
    job_log_append,
    job_mark_cancelled,
    worker_name,
)
from workers.models import Job, JobChunk

CHUNK_TASK = "workers.tasks.chunks.run_chunk"

# kind -> (run the chunk body, merge the chunks' metrics into the job's); filled by the
# services of the sharded kinds (`chunk_kind`), read by the chunk task.
_BODIES: dict[str, tuple[Callable[[ChunkRun], None], Callable[[Job, list[dict]], dict]]] = {}


class ChunkBusy(Exception):
    """The chunk is running on a live worker: the message is put back for later."""


def chunk_kind(
    kind: str,
    body: Callable[[ChunkRun], None],
    merge_metrics: Callable[[Job, list[dict]], dict],
) -> None:
    """Register how chunks of `kind` run and how their metrics add up on the job."""
    _BODIES[kind] = (body, merge_metrics)


def chunks_plan(job: Job, items: list[int]) -> list[JobChunk]:
    """The job's chunks of its `chunk_size` (frozen at launch), created on first call; later
    calls return the same ones, so that a redelivered or resumed job keeps its split."""
    existing = list(job.chunks.order_by("index"))
    if existing:
        return existing
    size = job.params.get("chunk_size") or settings.JOB_CHUNK_SIZE
    rows = [
        JobChunk(job=job, index=n, items=part, total=len(part))
        for n, part in enumerate(
            items[start : start + size] for start in range(0, len(items), size)
        )
    ]
    JobChunk.objects.bulk_create(rows, ignore_conflicts=True)
    return list(job.chunks.order_by("index"))


def _prepare(
    job_id: int, plan: Callable[[Job], list[int]], resumable: bool
) -> tuple[Job, list[JobChunk]] | None:
    """Claim the job, plan its chunks, and put every unfinished one back in the queue."""
    job = job_claim(job_id, resumable=resumable)
    if job is None:
        return None
    try:
        chunks = chunks_plan(job, plan(job))
    except JobFailed as exc:
        job_fail(job, str(exc))
        return None
    except Exception as exc:
        job_fail(job, f"{type(exc).__name__}: {exc}", detail=traceback.format_exc(limit=20))
        raise
    # A chunk a live worker is on stays with it (this is a redelivered job task); the rest
    # that did not finish go (back) to the queue.
    pending = [
        chunk
        for chunk in chunks
        if chunk.status != JobChunk.Status.DONE and not _held_elsewhere(chunk)
    ]
    JobChunk.objects.filter(pk__in=[c.pk for c in pending]).update(status=JobChunk.Status.QUEUED)
    _sum_progress(job.pk)
    job.refresh_from_db()
    if not pending:
        _finish_if_complete(job.pk)
    return job, pending


def job_fan_out(job_id: int, plan: Callable[[Job], list[int]]) -> int:
    """The job task of a sharded kind: plan the chunks and send a task for each unfinished
    one to the job's queue. Returns how many were sent."""
    from config.celery import app

    prepared = _prepare(job_id, plan, resumable=True)
    if prepared is None:
        return 0
    job, pending = prepared
    for chunk in pending:
        app.send_task(CHUNK_TASK, args=[chunk.pk], queue=job.queue)
    if pending:
        _log(job.pk, f"{len(pending)} chunks sent to the {job.queue} queue")
    return len(pending)


def job_run_here(job_id: int, plan: Callable[[Job], list[int]]) -> None:
    """Run every unfinished chunk of the job in this process, in order (commands, tests)."""
    prepared = _prepare(job_id, plan, resumable=True)
    if prepared is None:
        return
    _, pending = prepared
    for chunk in pending:
        chunk_run(chunk.pk)
        if Job.objects.get(pk=job_id).is_finished:
            return


def chunk_run(chunk_id: int, *, beat: bool = False) -> None:
    """The chunk task's body: run the kind's body on one chunk (ChunkBusy: try later).

    `beat` sends heartbeats from a thread while the body runs (the worker's task does), so
    that loading a big model or a long batch never looks like a dead worker."""
    with chunk_running(chunk_id) as run:
        if run is not None:
            body, _ = _BODIES[run.job.kind]
            with chunk_heartbeats(chunk_id) if beat else nullcontext():
                body(run)


@contextmanager
def chunk_heartbeats(chunk_id: int) -> Iterator[None]:
    """Write the chunk's heartbeat every quarter of JOB_CHUNK_STALE_S while the block runs."""
    stop = threading.Event()
    me = worker_name()
    interval = max(settings.JOB_CHUNK_STALE_S / 4, 0.25)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                # A busy database misses one beat; the next one counts.
                with suppress(DatabaseError):
                    JobChunk.objects.filter(
                        pk=chunk_id, worker=me, status=JobChunk.Status.RUNNING
                    ).update(heartbeat_at=timezone.now())
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"chunk-{chunk_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class ChunkRun:
    """The handle a chunk body uses, like `workers.jobs.JobRun` for a whole job."""

    def __init__(self, chunk: JobChunk) -> None:
        self.chunk = chunk
        self.job = chunk.job
        self.items: list[int] = list(chunk.items)
        self._last_write = 0.0

    @property
    def metrics(self) -> dict[str, Any]:
        return self.chunk.metrics

    def set_done(self, done: int) -> None:
        """Items of this chunk finished already (by an earlier attempt)."""
        self.chunk.done = done
        self._write()

    def restart(self, total: int) -> None:
        """Count in other units than the items (a judging chunk counts its calls), from
        nothing: a resumed body recounts what it skips."""
        self.chunk.total, self.chunk.done = total, 0
        self._write()

    def advance(self, n: int = 1, *, force: bool = False) -> None:
        self.chunk.done += n
        now = timezone.now().timestamp()
        last = self.chunk.done >= self.chunk.total
        if force or last or now - self._last_write >= MIN_WRITE_INTERVAL_S:
            self._last_write = now
            self._write()

    def heartbeat(self) -> None:
        self._write()

    def _write(self) -> None:
        """Save the chunk's progress, add it up on the job, and stop if the job stopped."""
        now = timezone.now()
        JobChunk.objects.filter(pk=self.chunk.pk).update(
            done=min(self.chunk.done, self.chunk.total), total=self.chunk.total, heartbeat_at=now
        )
        _sum_progress(self.job.pk, now=now)
        state = Job.objects.filter(pk=self.job.pk).values("status", "cancel_requested").first()
        if state is None or state["cancel_requested"] or state["status"] != Job.Status.RUNNING:
            raise JobCancelled

    def log(self, line: str) -> None:
        _log(self.job.pk, f"chunk {self.chunk.index}: {line}")

    def set_metrics(self, **metrics: Any) -> None:
        self.chunk.metrics = {**self.chunk.metrics, **metrics}
        JobChunk.objects.filter(pk=self.chunk.pk).update(metrics=self.chunk.metrics)


def _log(job_id: int, line: str) -> None:
    # Several chunks log at once: lock the row so that no line overwrites another.
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is not None:
            job_log_append(job, [line])
            job.save(update_fields=["log_tail"])


def _sum_progress(job_id: int, *, now: Any = None) -> None:
    sums = JobChunk.objects.filter(job_id=job_id).aggregate(done=Sum("done"), total=Sum("total"))
    total = sums["total"] or 0
    Job.objects.filter(pk=job_id).update(
        progress_done=min(sums["done"] or 0, total),
        progress_total=total,
        heartbeat_at=now or timezone.now(),
    )


def _held_elsewhere(chunk: JobChunk) -> bool:
    """Running on another worker that sent a heartbeat within JOB_CHUNK_STALE_S."""
    stale_before = timezone.now() - timedelta(seconds=settings.JOB_CHUNK_STALE_S)
    return (
        chunk.status == JobChunk.Status.RUNNING
        and chunk.worker != worker_name()
        and chunk.heartbeat_at is not None
        and chunk.heartbeat_at > stale_before
    )


def _claim(chunk_id: int) -> JobChunk | None:
    """Take the chunk for this process; None when there is nothing to run."""
    chunk = JobChunk.objects.select_related("job").filter(pk=chunk_id).first()
    if chunk is None or chunk.status == JobChunk.Status.DONE:
        return None
    if chunk.job.status == Job.Status.RUNNING and chunk.job.cancel_requested:
        _cancel(chunk.job_id)
    if chunk.job.status != Job.Status.RUNNING or chunk.job.cancel_requested:
        return None  # stopped: a resume sends its unfinished chunks again
    now = timezone.now()
    me = worker_name()
    taken = JobChunk.objects.filter(pk=chunk_id, status=JobChunk.Status.QUEUED).update(
        status=JobChunk.Status.RUNNING, worker=me, heartbeat_at=now, attempts=F("attempts") + 1
    )
    if not taken:
        # Running already: its worker died (a redelivery), or a live worker has it.
        if _held_elsewhere(chunk):
            raise ChunkBusy(f"chunk {chunk.index} of job #{chunk.job_id} is on {chunk.worker}")
        taken = JobChunk.objects.filter(
            pk=chunk_id, status=JobChunk.Status.RUNNING, heartbeat_at=chunk.heartbeat_at
        ).update(worker=me, heartbeat_at=now, attempts=F("attempts") + 1)
        if not taken:
            raise ChunkBusy(f"chunk {chunk.index} of job #{chunk.job_id} was just taken")
        _log(chunk.job_id, f"chunk {chunk.index}: taken over by {me} from {chunk.worker}")
    chunk.refresh_from_db()
    return chunk


@contextmanager
def chunk_running(chunk_id: int) -> Iterator[ChunkRun | None]:
    """Claim the chunk, run the body, and record how it ended on the chunk and the job."""
    chunk = _claim(chunk_id)
    if chunk is None:
        yield None
        return
    run = ChunkRun(chunk)
    try:
        yield run
    except JobCancelled:
        _release(chunk)
        _cancel(chunk.job_id)
    except JobFailed as exc:
        _release(chunk)
        _fail(chunk.job_id, str(exc))
    except Exception as exc:
        _release(chunk)
        _fail(
            chunk.job_id,
            f"{type(exc).__name__}: {exc}",
            detail=traceback.format_exc(limit=20),
        )
        raise
    else:
        JobChunk.objects.filter(pk=chunk.pk).update(
            status=JobChunk.Status.DONE, done=F("total"), heartbeat_at=timezone.now()
        )
        _sum_progress(chunk.job_id)
        _finish_if_complete(chunk.job_id)


def _release(chunk: JobChunk) -> None:
    """Back to the queue, its finished items kept: a resume sends it again."""
    JobChunk.objects.filter(pk=chunk.pk, worker=worker_name()).update(status=JobChunk.Status.QUEUED)


def _cancel(job_id: int) -> None:
    job = Job.objects.get(pk=job_id)
    if job.status == Job.Status.RUNNING:  # the first chunk to see the request ends the job
        _log(job.pk, "cancelled")
        job_mark_cancelled(job)


def _fail(job_id: int, error: str, *, detail: str = "") -> None:
    job = Job.objects.get(pk=job_id)
    if job.status == Job.Status.RUNNING:  # the first chunk to fail tells the story
        job_fail(job, error, detail=detail)


def _finish_if_complete(job_id: int) -> None:
    """The last chunk to finish finishes the job, with every chunk's metrics merged."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Job.Status.RUNNING:
            return
        chunks = list(job.chunks.all())
        if any(chunk.status != JobChunk.Status.DONE for chunk in chunks):
            return
        _, merge = _BODIES[job.kind]
        metrics = merge(job, [chunk.metrics for chunk in chunks])
        workers = sorted({chunk.worker for chunk in chunks if chunk.worker})
        job_finish(job, metrics={**metrics, "chunks": len(chunks), "chunk_workers": workers})


def chunks_requeue_stale(*, now: Any = None) -> int:
    """Send again the chunks whose worker stopped sending heartbeats (the reaper's half for
    sharded jobs: a dead worker's chunk need not wait for the broker's visibility timeout).
    Returns how many were sent."""
    from config.celery import app

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_CHUNK_STALE_S)
    stale = JobChunk.objects.filter(
        status=JobChunk.Status.RUNNING, heartbeat_at__lt=cutoff, job__status=Job.Status.RUNNING
    ).select_related("job")
    sent = 0
    for chunk in stale:
        app.send_task(CHUNK_TASK, args=[chunk.pk], queue=chunk.job.queue)
        sent += 1
    return sent
