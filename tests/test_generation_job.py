"""Generation jobs: rows written per batch, resumable, idempotent, clear failures."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from annotation.models import Completion
from datasets_app.models import Prompt
from training.core.generation import SamplingParams
from training.models import Checkpoint
from training.services import generation
from workers import jobs
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend, pytest.mark.slow]
PARAMS = SamplingParams(k=3, temperature=0.9, max_new_tokens=8, seed=7, template="zero_shot_mc")


@pytest.fixture
def checkpoint(tiny_dir):
    return Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))


def _launch(checkpoint, source, params=PARAMS, **extra) -> Job:
    return generation.generation_launch(
        checkpoint=checkpoint,
        selection={"source_id": source.pk},
        params=params,
        enqueue=False,
        **extra,
    )


def test_a_job_writes_k_completions_per_prompt_with_their_provenance(checkpoint, shapes_source):
    job = _launch(checkpoint, shapes_source)
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (job.progress_done, job.progress_total) == (6, 6)
    assert Completion.objects.count() == 18
    first = Completion.objects.first()
    assert first.job == job and first.template == "zero_shot_mc"
    assert first.sampling["backend"] == "transformers" and first.sampling["seed"] == 7
    assert set(Completion.objects.values_list("sample_index", flat=True)) == {0, 1, 2}
    assert job.metrics["completions"] == 18 and job.metrics["completions_per_s"] > 0


def test_running_the_same_job_again_adds_nothing(checkpoint, shapes_source):
    generation.generation_run(job_id=_launch(checkpoint, shapes_source).pk)
    texts = list(Completion.objects.order_by("id").values_list("text", flat=True))
    second = _launch(checkpoint, shapes_source)
    generation.generation_run(job_id=second.pk)
    second.refresh_from_db()
    assert second.status == Job.Status.SUCCEEDED and "already complete" in second.log_tail
    assert list(Completion.objects.order_by("id").values_list("text", flat=True)) == texts


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing records how the job ended."""


def test_a_killed_and_resumed_job_ends_with_exactly_the_expected_completions(
    checkpoint, shapes_source, monkeypatch
):
    job = _launch(checkpoint, shapes_source, token_budget=1)  # one prompt per batch
    real = generation.generate_batches

    def dies_after_two(*args, **kwargs):
        for n, batch in enumerate(real(*args, **kwargs)):
            if n == 2:
                raise WorkerKilled
            yield batch

    monkeypatch.setattr(generation, "generate_batches", dies_after_two)
    with pytest.raises(WorkerKilled):
        generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and Completion.objects.count() == 6

    monkeypatch.setattr(generation, "generate_batches", real)
    generation.generation_run(job_id=job.pk)  # the broker redelivers: acks_late
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 2
    assert Completion.objects.count() == 18
    assert "resumed" in job.log_tail and "2 prompts already complete" in job.log_tail


def test_cancel_keeps_only_whole_prompts(checkpoint, shapes_source, monkeypatch):
    job = _launch(checkpoint, shapes_source, token_budget=1)
    real = generation.generate_batches

    def cancel_after_one(*args, **kwargs):
        for n, batch in enumerate(real(*args, **kwargs)):
            if n == 1:
                jobs.job_request_cancel(job=Job.objects.get(pk=job.pk))
            yield batch

    monkeypatch.setattr(generation, "generate_batches", cancel_after_one)
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    per_prompt = Completion.objects.values_list("prompt_id", flat=True)
    assert len(per_prompt) == 6 and len(set(per_prompt)) == 2


def test_a_bad_checkpoint_path_fails_the_job_with_a_readable_error(shapes_source, tmp_path):
    missing = Checkpoint.objects.create(name="gone", model_path=str(tmp_path / "nowhere"))
    job = _launch(missing, shapes_source)
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == f"checkpoint gone: checkpoint path {tmp_path / 'nowhere'} does not exist"
    assert Completion.objects.count() == 0


def test_an_image_that_fails_to_load_stops_the_job_at_that_prompt(checkpoint, shapes_source):
    broken = Prompt.objects.order_by("id")[3]
    default_storage.delete(broken.image.name)
    # The same picture may back another prompt; give this one a name of its own.
    Prompt.objects.filter(pk=broken.pk).update(image="images/missing.png")
    job = _launch(checkpoint, shapes_source, token_budget=1)
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert f"prompt #{broken.pk}: its image images/missing.png cannot be loaded" in job.error
    assert not Completion.objects.filter(prompt=broken).exists()
    assert Completion.objects.count() == 9  # the three prompts before it, whole


def test_launch_refuses_bad_requests_before_queueing(checkpoint, shapes_source):
    with pytest.raises(ValueError, match="no prompts match"):
        generation.generation_launch(
            checkpoint=checkpoint,
            selection={"source_id": shapes_source.pk, "split": "test", "subject": "nope"},
            params=PARAMS,
            enqueue=False,
        )
    with pytest.raises(ValueError, match="greedy"):
        _launch(checkpoint, shapes_source, SamplingParams(k=2, temperature=0))
    assert Job.objects.count() == 0


def test_generate_command_runs_here_and_enqueues(checkpoint, shapes_source, capsys):
    call_command("generate", checkpoint="tiny", source="sqa", k=2, limit=2, max_new_tokens=4)
    assert Completion.objects.count() == 4
    assert "4 completions" in capsys.readouterr().out
    call_command("generate", checkpoint="tiny", source="sqa", enqueue=True)
    queued = Job.objects.filter(status=Job.Status.QUEUED).get()
    assert queued.queue == "gpu" and f"job {queued.pk} queued" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no checkpoint named"):
        call_command("generate", checkpoint="nope", source="sqa")


def test_a_vllm_job_launches_anywhere_and_fails_clearly_on_a_worker_without_vllm(
    checkpoint, shapes_source, monkeypatch
):
    from training.core.generation import core as generation_core

    monkeypatch.setattr(generation_core, "vllm_available", lambda: False)
    # The machine that launches (the web server) need not have vLLM: a gpu worker runs it.
    assert _launch(checkpoint, shapes_source, backend="vllm").status == Job.Status.QUEUED
    with pytest.raises(CommandError, match="failed: checkpoint tiny: the vllm backend needs"):
        call_command("generate", checkpoint="tiny", source="sqa", backend="vllm", k=1)
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        _launch(checkpoint, shapes_source, backend="tensorrt")
