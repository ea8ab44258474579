"""Sharded jobs: chunks that any worker takes, added up on the Job row (issue 19.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.models import Completion
from training.core.generation import SamplingParams
from training.models import Checkpoint
from training.services import generation
from workers import chunks, jobs, services
from workers.models import Job, JobChunk

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]
PARAMS = SamplingParams(k=2, temperature=0.9, max_new_tokens=6, seed=3, template="zero_shot_mc")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkpoint(tiny_dir):
    return Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))


@pytest.fixture
def sent(monkeypatch):
    """The chunk tasks the job task sends, caught instead of going to a broker."""
    from config.celery import app

    calls: list[tuple[str, int, str]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args, queue: calls.append((name, args[0], queue))
    )
    return calls


def _launch(checkpoint, source, settings, size=2) -> Job:
    settings.JOB_CHUNK_SIZE = size
    return generation.generation_launch(
        checkpoint=checkpoint, selection={"source_id": source.pk}, params=PARAMS, enqueue=False
    )


def _counts_per_prompt() -> list[int]:
    from django.db.models import Count

    rows = Completion.objects.values("prompt_id").annotate(n=Count("id"))
    return sorted(row["n"] for row in rows)


def test_a_job_split_in_chunks_adds_up_their_progress_and_metrics(
    checkpoint, shapes_source, settings
):
    job = _launch(checkpoint, shapes_source, settings)
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert [len(c.items) for c in job.chunks.all()] == [2, 2, 2]
    assert set(job.chunks.values_list("status", flat=True)) == {JobChunk.Status.DONE}
    assert (job.progress_done, job.progress_total) == (6, 6)
    assert _counts_per_prompt() == [2] * 6
    assert job.metrics["completions"] == 12 and job.metrics["chunks"] == 3
    assert job.metrics["generated_tokens"] == sum(
        c.metrics["generated_tokens"] for c in job.chunks.all()
    )


def test_the_job_task_sends_one_task_per_chunk_to_the_jobs_queue(
    checkpoint, shapes_source, settings, sent
):
    job = _launch(checkpoint, shapes_source, settings)
    generation.generation_shard(job_id=job.pk)
    ids = list(job.chunks.values_list("pk", flat=True))
    assert sent == [(chunks.CHUNK_TASK, pk, "gpu") for pk in ids]
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.progress_total == 6
    for pk in reversed(ids):  # workers take them in any order
        chunks.chunk_run(pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and _counts_per_prompt() == [2] * 6
    chunks.chunk_run(ids[0])  # a late duplicate message finds the chunk done
    assert Completion.objects.count() == 12


def test_cancel_stops_every_chunk_and_resume_sends_only_the_unfinished(
    checkpoint, shapes_source, settings, sent
):
    job = _launch(checkpoint, shapes_source, settings)
    generation.generation_shard(job_id=job.pk)
    first, second, third = job.chunks.order_by("index")
    chunks.chunk_run(first.pk)
    jobs.job_request_cancel(job=Job.objects.get(pk=job.pk))
    chunks.chunk_run(second.pk)  # its message arrives after the cancel: nothing runs
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and Completion.objects.count() == 4

    sent.clear()
    services.job_resume(job=job)  # sends the job task; here we run it by hand
    generation.generation_shard(job_id=job.pk)
    assert [pk for _, pk, _ in sent] == [second.pk, third.pk]
    for _, pk, _ in sent:
        chunks.chunk_run(pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and _counts_per_prompt() == [2] * 6


def test_a_chunk_cancelled_midway_keeps_its_whole_prompts(
    checkpoint, shapes_source, settings, sent, monkeypatch
):
    job = _launch(checkpoint, shapes_source, settings, size=6)
    settings.GENERATION_TOKEN_BUDGET_CPU = 1  # one prompt per batch
    generation.generation_shard(job_id=job.pk)
    real = generation.generate_batches

    def cancel_after_one(*args, **kwargs):
        for n, batch in enumerate(real(*args, **kwargs)):
            if n == 1:
                jobs.job_request_cancel(job=Job.objects.get(pk=job.pk))
            yield batch

    monkeypatch.setattr(generation, "generate_batches", cancel_after_one)
    chunks.chunk_run(sent[0][1])
    job.refresh_from_db()
    chunk = job.chunks.get()
    assert job.status == Job.Status.CANCELLED
    assert (chunk.status, chunk.done, Completion.objects.count()) == ("queued", 2, 4)


def test_a_running_chunk_is_taken_over_only_once_its_heartbeat_is_stale(
    checkpoint, shapes_source, settings, sent
):
    job = _launch(checkpoint, shapes_source, settings, size=6)
    generation.generation_shard(job_id=job.pk)
    chunk = job.chunks.get()
    JobChunk.objects.filter(pk=chunk.pk).update(
        status="running", worker="elsewhere:1", heartbeat_at=timezone.now(), attempts=1
    )
    with pytest.raises(chunks.ChunkBusy, match="is on elsewhere:1"):
        chunks.chunk_run(chunk.pk)  # a duplicate message while its worker lives
    old = timezone.now() - timedelta(seconds=settings.JOB_CHUNK_STALE_S + 1)
    JobChunk.objects.filter(pk=chunk.pk).update(heartbeat_at=old)
    chunks.chunk_run(chunk.pk)  # redelivered after its worker died
    chunk.refresh_from_db()
    job.refresh_from_db()
    assert (chunk.status, chunk.attempts, job.status) == ("done", 2, Job.Status.SUCCEEDED)
    assert "taken over" in job.log_tail and _counts_per_prompt() == [2] * 6


def test_the_reaper_sends_a_dead_workers_chunk_again_and_leaves_the_job_running(
    checkpoint, shapes_source, settings, sent
):
    job = _launch(checkpoint, shapes_source, settings)
    generation.generation_shard(job_id=job.pk)
    first, second, _ = job.chunks.order_by("index")
    long_ago = timezone.now() - timedelta(hours=1)
    JobChunk.objects.filter(pk=first.pk).update(
        status="running", worker="dead:1", heartbeat_at=long_ago
    )
    JobChunk.objects.filter(pk=second.pk).update(
        status="running", worker="alive:1", heartbeat_at=timezone.now()
    )
    Job.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
    sent.clear()
    assert jobs.jobs_fail_stale() == 0  # its chunks wait or are sent again, not failed
    assert chunks.chunks_requeue_stale() == 1
    assert sent == [(chunks.CHUNK_TASK, first.pk, "gpu")]
    assert Job.objects.get(pk=job.pk).status == Job.Status.RUNNING


def test_a_failing_chunk_fails_the_job_and_the_other_chunks_stop(
    checkpoint, shapes_source, settings, sent
):
    job = _launch(checkpoint, shapes_source, settings)
    generation.generation_shard(job_id=job.pk)
    _, second, third = job.chunks.order_by("index")
    Checkpoint.objects.filter(pk=checkpoint.pk).update(model_path="/nowhere/at/all")
    chunks.chunk_run(second.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "checkpoint tiny" in job.error
    chunks.chunk_run(third.pk)
    assert JobChunk.objects.get(pk=third.pk).status == "queued" and not Completion.objects.exists()


# --- the real thing: three worker processes on a Redis broker, one killed -----------------


def _worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen:
    from tests.processes import celery_worker_argv

    return subprocess.Popen(
        celery_worker_argv(name, log_level="info"),
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _wait_until_ready(workers: list[subprocess.Popen], logs: list[Path]) -> None:
    """Every worker consumes before the job is sent, so that all three take chunks."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(" ready." in log.read_text() for log in logs if log.exists()):
            return
        assert all(w.poll() is None for w in workers), "a worker exited at start"
        time.sleep(0.2)
    raise AssertionError("the workers did not start in 120 s")


def _running_chunk_of(workers: list[subprocess.Popen]) -> tuple[subprocess.Popen, int] | None:
    by_pid = {str(w.pid): w for w in workers}
    for pk, worker in JobChunk.objects.filter(status="running").values_list("pk", "worker"):
        pid = worker.rsplit(":", 1)[-1]
        if pid in by_pid:
            return by_pid[pid], pk
    return None


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_three_workers_on_redis_share_a_job_and_survive_one_killed(
    redis_url, tmp_path, tiny_dir, shapes_source, settings
):
    from tests.processes import database_url

    checkpoint = Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    settings.JOB_CHUNK_SIZE = 1
    params = SamplingParams(k=3, temperature=0.9, max_new_tokens=24, seed=5)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url(),
        "VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CHECKPOINT_ROOT": str(settings.CHECKPOINT_ROOT),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        # A killed worker's task comes back within seconds, not hours.
        "CELERY_VISIBILITY_TIMEOUT_S": "6",
        "CELERY_UNACKED_RESTORE_INTERVAL_S": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "JOB_CHUNK_STALE_S": "3",
        "GENERATION_TOKEN_BUDGET_CPU": "1",  # one sample per batch: a heartbeat each
    }
    workers = [_worker(env, f"w{n}", tmp_path / f"w{n}.log") for n in range(3)]
    from config.celery import app

    try:
        _wait_until_ready(workers, [tmp_path / f"w{n}.log" for n in range(3)])
        job = generation.generation_launch(
            checkpoint=checkpoint,
            selection={"source_id": shapes_source.pk},
            params=params,
            enqueue=False,
        )
        # What job_enqueue sends once the launch commits, to this test's Redis.
        with app.connection_for_write(redis_url) as connection:
            app.send_task(
                "workers.tasks.generation.run_generation",
                args=[job.pk],
                queue="gpu",
                connection=connection,
            )
        killed = None
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline:
            found = _running_chunk_of(workers)
            if found:
                worker, chunk_pk = found
                worker.send_signal(signal.SIGSTOP)  # freeze it, then make sure it is mid-chunk
                if JobChunk.objects.get(pk=chunk_pk).status == "running":
                    worker.send_signal(signal.SIGKILL)
                    worker.wait(10)
                    killed = (worker, chunk_pk)
                else:
                    worker.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        assert killed, "no worker was seen running a chunk"
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.is_finished:
                break
            time.sleep(0.5)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(30)
    logs = "\n".join((tmp_path / f"w{n}.log").read_text()[-2000:] for n in range(3))
    assert job.status == Job.Status.SUCCEEDED, (job.error, job.log_tail, logs)
    assert _counts_per_prompt() == [3] * 6  # every prompt exactly K, none twice
    chunk = JobChunk.objects.get(pk=killed[1])
    assert chunk.status == "done" and chunk.attempts >= 2
    assert not chunk.worker.endswith(f":{killed[0].pid}")
    assert len(job.metrics["chunk_workers"]) >= 2 and job.metrics["chunks"] == 6


def test_the_job_page_shows_its_chunks(
    checkpoint, shapes_source, settings, sent, client, staff_user
):
    job = _launch(checkpoint, shapes_source, settings)
    generation.generation_shard(job_id=job.pk)
    chunks.chunk_run(job.chunks.order_by("index").first().pk)
    client.force_login(staff_user)
    page = client.get(reverse("workers:job", args=[job.pk])).content.decode()
    assert "Chunks: 1 done · 0 running · 2 queued, of 3" in page


# --- judging ------------------------------------------------------------------------------


@pytest.fixture
def four_each(shapes_source):
    """Four completions per prompt: the oracle rates them two per call."""
    other = Checkpoint.objects.create(name="policy", model_path="x")
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=other, text=f"The answer is {'ABCD'[i]}.", sample_index=i)
        for p in shapes_source.prompts.all()
        for i in range(4)
    )
    return shapes_source


def _judge(source, **extra) -> Job:
    from annotation.services import judging

    config = judging.judge_config_from_spec("oracle")
    return judging.judge_launch(
        judge_config=config,
        selection={"source_id": source.pk},
        k_per_call=2,
        chunk_size=2,
        enqueue=False,
        **extra,
    )


def test_a_judging_job_runs_in_chunks_counted_in_calls(four_each):
    from annotation.models import Rating
    from annotation.services import judging

    job = _judge(four_each)
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.chunks.count() == 3 and (job.progress_done, job.progress_total) == (12, 12)
    assert Rating.objects.count() == 24
    assert (job.metrics["calls"], job.metrics["chunks"]) == (12, 3)


def test_the_jobs_cost_limit_holds_across_its_chunks(four_each, monkeypatch):
    from annotation.core.judges.runner import RunLimits
    from annotation.services import judging

    monkeypatch.setattr(judging, "cost_usd", lambda model, usage: 0.1)
    job = _judge(four_each, limits=RunLimits(concurrency=1, max_cost_usd=0.25))
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.metrics["stopped_at_max_cost"]
    assert job.metrics["calls"] == 3 and job.metrics["cost_usd"] == pytest.approx(0.3)
    assert "not started: the job's cost reached its limit" in job.log_tail


def test_a_judging_job_with_a_rate_limit_runs_whole(four_each, sent):
    from annotation.core.judges.runner import RunLimits
    from annotation.services import judging

    job = _judge(four_each, limits=RunLimits(requests_per_minute=6000))
    judging.judge_shard(job_id=job.pk)  # the task: no chunk is sent, it runs here
    job.refresh_from_db()
    assert sent == [] and not job.chunks.exists()
    assert job.status == Job.Status.SUCCEEDED and job.metrics["calls"] == 12


# --- evaluation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "data"),
    [("scienceqa", "scienceqa.parquet"), ("noisy_image_text", "scienceqa.parquet")],
)
def test_an_evaluation_in_chunks_stores_and_scores_what_one_piece_would(
    tiny_dir, tmp_path, settings, task, data
):
    from datasets_app.core.shapes import make_shapes
    from training.models import EvaluationItem
    from training.services import evaluations

    make_shapes(tmp_path / "shapes", n=7, seed=3)
    checkpoint = Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    spec = {"task": task, "data": str(tmp_path / "shapes" / data), "max_new_tokens": 6}
    if task == "noisy_image_text":  # each item three times, judged
        from annotation.services import judging

        spec["judge_id"] = judging.judge_config_from_spec("oracle").pk
    runs = []
    for size in (64, 3):
        settings.JOB_CHUNK_SIZE = size
        run = evaluations.evaluation_launch(checkpoint=checkpoint, enqueue=False, **spec)
        evaluations.evaluation_run(job_id=run.job_id)
        run.refresh_from_db()
        assert run.job.status == Job.Status.SUCCEEDED, run.job.error
        runs.append(run)
    whole, sharded = runs
    assert (whole.job.chunks.count(), sharded.job.chunks.count()) == (1, 3)
    assert sharded.metrics == whole.metrics and sharded.item_count == whole.item_count

    def rows(run):
        return list(EvaluationItem.objects.filter(run=run).values_list("position", "key", "score"))

    assert rows(sharded) == rows(whole)
    assert [p for p, _, _ in rows(sharded)] == list(range(whole.item_count))


@pytest.mark.django_db(transaction=True)
def test_a_chunk_sends_heartbeats_while_its_body_is_busy(checkpoint, shapes_source, settings, sent):
    job = _launch(checkpoint, shapes_source, settings)
    generation.generation_shard(job_id=job.pk)
    chunk = job.chunks.first()
    long_ago = timezone.now() - timedelta(hours=1)
    JobChunk.objects.filter(pk=chunk.pk).update(
        status="running", worker=chunks.worker_name(), heartbeat_at=long_ago
    )
    settings.JOB_CHUNK_STALE_S = 1
    with chunks.chunk_heartbeats(chunk.pk):
        time.sleep(0.8)  # a model loading: no batch, no progress call
    assert JobChunk.objects.get(pk=chunk.pk).heartbeat_at > long_ago


def test_a_cancelled_evaluation_resumes_with_its_unfinished_chunks(
    tiny_dir, tmp_path, settings, sent
):
    from datasets_app.core.shapes import make_shapes
    from training.services import evaluations

    make_shapes(tmp_path / "shapes", n=7, seed=3)
    checkpoint = Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    spec = {"task": "scienceqa", "data": str(tmp_path / "shapes" / "scienceqa.parquet")}
    settings.JOB_CHUNK_SIZE = 3
    run = evaluations.evaluation_launch(checkpoint=checkpoint, enqueue=False, **spec)
    evaluations.evaluation_shard(job_id=run.job_id)
    first, second, third = run.job.chunks.order_by("index")
    chunks.chunk_run(first.pk)
    jobs.job_request_cancel(job=Job.objects.get(pk=run.job_id))
    sent.clear()
    services.job_resume(job=Job.objects.get(pk=run.job_id))
    evaluations.evaluation_shard(job_id=run.job_id)  # what the resumed job's task does
    assert [pk for _, pk, _ in sent] == [second.pk, third.pk]
    for _, pk, _ in sent:
        chunks.chunk_run(pk)
    run.refresh_from_db()
    assert run.job.status == Job.Status.SUCCEEDED and run.item_count == 7
    from training.models import EvaluationItem

    positions = EvaluationItem.objects.filter(run=run).values_list("position", flat=True)
    assert sorted(positions) == list(range(7))
