"""The Job lifecycle every long task uses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from workers import jobs
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


def _job(**extra) -> Job:
    return jobs.job_create(kind=Job.Kind.SELFTEST, title="t", **extra)


def test_a_job_runs_to_success_with_progress_and_log():
    job = _job()
    with jobs.job_running(job.pk) as run:
        run.set_total(3)
        for _ in range(3):
            run.advance()
        run.log("all done")
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert (job.progress_done, job.progress_total, job.attempts) == (3, 3, 1)
    assert job.started_at <= job.heartbeat_at <= job.finished_at
    assert "all done" in job.log_tail


def test_a_job_is_claimed_once():
    job = _job()
    first = jobs.job_claim(job.pk)
    assert first is not None
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    assert jobs.job_claim(job.pk) is None


def test_a_redelivered_job_fails_instead_of_running_twice():
    job = _job()
    jobs.job_claim(job.pk)  # the worker that had it died here
    with jobs.job_running(job.pk) as run:
        assert run is None
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "stopped" in job.error


def test_a_resumable_job_continues_after_redelivery():
    job = _job()
    jobs.job_claim(job.pk)
    with jobs.job_running(job.pk, resumable=True) as run:
        assert run is not None
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 2
    assert "resumed" in job.log_tail


def test_an_exception_fails_the_job_with_its_message():
    job = _job()
    with pytest.raises(RuntimeError), jobs.job_running(job.pk):
        raise RuntimeError("the checkpoint folder is empty")
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "RuntimeError: the checkpoint folder is empty"
    # The traceback is kept for staff, out of the log its creator reads.
    assert "Traceback" in job.error_detail and "Traceback" not in job.log_tail


def test_cancel_stops_a_running_job_at_its_next_progress():
    job = _job()
    seen = []
    with jobs.job_running(job.pk) as run:
        run.set_total(10)
        for i in range(10):
            if i == 4:
                jobs.job_request_cancel(job=Job.objects.get(pk=job.pk))
            run.advance(force=True)
            seen.append(i)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and seen == [0, 1, 2, 3]


def test_cancel_of_a_queued_job_ends_it_before_it_starts():
    job = _job()
    jobs.job_request_cancel(job=job)
    assert job.status == Job.Status.CANCELLED
    assert jobs.job_claim(job.pk) is None


def test_stale_running_jobs_are_marked_failed(settings):
    settings.JOB_STALE_AFTER_S = 60
    alive, dead = _job(), _job()
    for job in (alive, dead):
        jobs.job_claim(job.pk)
    Job.objects.filter(pk=dead.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    assert jobs.jobs_fail_stale() == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == Job.Status.FAILED and "heartbeat" in dead.error
    assert alive.status == Job.Status.RUNNING


def test_progress_writes_are_throttled(django_assert_max_num_queries):
    job = _job()
    run = jobs.JobRun(jobs.job_claim(job.pk))
    run.set_total(1000)
    with django_assert_max_num_queries(10):
        for _ in range(999):
            run.advance()
    run.advance()
    job.refresh_from_db()
    assert job.progress_done == 1000


def test_an_expected_failure_is_recorded_without_a_traceback():
    job = _job()
    with jobs.job_running(job.pk):
        raise jobs.JobFailed("row 3: missing required field 'question'")
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "row 3: missing required field 'question'"
    assert "Traceback" not in job.log_tail


# --- where a job's task goes: config.celery.JOB_TASKS, the one table -------------------------


def test_each_job_kind_is_recorded_on_the_queue_its_task_is_routed_to():
    import workers.tasks  # noqa: F401  (registers the tasks, as the worker does)
    from config.celery import JOB_TASKS, app

    assert set(JOB_TASKS) <= set(Job.Kind.values)
    for kind, (task_name, queue) in JOB_TASKS.items():
        assert task_name in app.tasks, f"{kind}: no task is registered as {task_name}"
        routed = app.amqp.router.route({}, task_name)["queue"].name
        assert jobs.job_create(kind=kind).queue == routed == queue, kind
    assert {jobs.job_queue(k) for k in ("generation", "training", "evaluation")} == {"gpu"}
    assert jobs.job_queue("judging") == "judge"


def test_job_enqueue_sends_the_task_of_the_kind_by_name_after_commit(
    monkeypatch, django_capture_on_commit_callbacks
):
    from config.celery import app

    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    job = jobs.job_create(kind=Job.Kind.EXPORT)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_enqueue(job)
        assert sent == []  # not before the transaction commits
    assert sent == [("workers.tasks.exports.run_export", {"args": [job.pk], "queue": "default"})]


def test_only_a_selftest_picks_its_queue():
    assert _job(queue="judge").queue == "judge"  # it exists to test that queue
    with pytest.raises(ValueError, match="training jobs run on the gpu queue, not 'default'"):
        jobs.job_create(kind=Job.Kind.TRAINING, queue="default")
    with pytest.raises(ValueError, match="no task runs 'curation' jobs"):
        jobs.job_create(kind="curation")  # a kind no task runs
    assert Job.objects.count() == 1
