"""Judging jobs through the real SDKs against fake servers: every fault ends as it should,
and a killed run resumes without a second call for what was already rated."""

from __future__ import annotations

import pytest

from annotation.core.judges.runner import RunLimits
from annotation.models import Completion, JudgeCall, Rating
from annotation.services import judging
from tests.fake_judge_servers import expected_scores
from training.models import Checkpoint
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]
FAST = RunLimits(concurrency=2, backoff_base_s=0.01, backoff_max_s=0.05, max_attempts=4)


@pytest.fixture
def openai_judge(settings, fake_openai):
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_BASE_URL = fake_openai.base_url
    fake_openai.retry_after = 0.05
    return judging.judge_config_from_spec("openai:gpt-4o-mini")


def _run(config, source, limits=FAST, timeout_s=5.0) -> Job:
    job = judging.judge_launch(
        judge_config=config,
        selection={"source_id": source.pk},
        limits=limits,
        timeout_s=timeout_s,
        enqueue=False,
    )
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def _assert_all_rated_as_the_server_said():
    assert Rating.objects.count() == 24
    for rating in Rating.objects.select_related("completion"):
        assert rating.scores == expected_scores(rating.completion.text)


@pytest.mark.parametrize("fault", ["429", "500", "drop", "not_json", "score_7"])
def test_a_single_fault_is_retried_and_everything_is_stored(
    openai_judge, fake_openai, shapes_source, numbered_completions, fault
):
    fake_openai.push_faults(fault)
    job = _run(openai_judge, shapes_source)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert fake_openai.calls == 7 and job.metrics["failures"] == 0
    _assert_all_rated_as_the_server_said()
    assert job.metrics["input_tokens"] > 0 and job.metrics["cost_usd"] > 0


def test_a_hang_past_the_timeout_is_retried(
    openai_judge, fake_openai, shapes_source, numbered_completions
):
    fake_openai.hang_s = 3.0
    fake_openai.push_faults("hang")
    job = _run(openai_judge, shapes_source, timeout_s=0.5)
    assert job.status == Job.Status.SUCCEEDED and fake_openai.calls == 7
    _assert_all_rated_as_the_server_said()


@pytest.mark.parametrize("fault", ["not_json", "missing_completion", "score_7", "score_high"])
def test_an_answer_invalid_every_time_is_a_failed_item_with_nothing_partial(
    openai_judge, fake_openai, shapes_source, numbered_completions, fault
):
    fake_openai.push_faults(fault, fault, fault)  # the first item, all its tries
    job = _run(openai_judge, shapes_source, limits=RunLimits(concurrency=1))
    assert job.status == Job.Status.SUCCEEDED and job.metrics["failures"] == 1
    failed = JudgeCall.objects.get(status=JudgeCall.Status.FAILED)
    assert failed.raw_response and "invalid answer" in failed.error and failed.attempts == 3
    assert not Rating.objects.filter(completion_id__in=failed.completion_ids).exists()
    assert Rating.objects.count() == 20  # the five other prompts, whole
    assert job.metrics["failed_items"][0]["prompt"] == failed.prompt_id


def test_a_bad_key_fails_the_job_at_once(
    openai_judge, fake_openai, shapes_source, numbered_completions
):
    fake_openai.api_key = "the-right-key"
    job = _run(openai_judge, shapes_source)
    assert job.status == Job.Status.FAILED and "the judge refused" in job.error
    assert "sk-test-not-a-real-key" not in job.error
    assert fake_openai.calls <= 2 and Rating.objects.count() == 0


class WorkerKilled(BaseException):
    pass


def test_a_killed_run_resumes_and_never_calls_twice_for_an_item(
    openai_judge, fake_openai, shapes_source, numbered_completions, monkeypatch
):
    job = judging.judge_launch(
        judge_config=openai_judge,
        selection={"source_id": shapes_source.pk},
        limits=RunLimits(concurrency=1),
        enqueue=False,
    )
    real = judging._JudgeJob.record
    recorded = []

    def killed_after_three(self, outcome):
        real(self, outcome)
        recorded.append(outcome)
        if len(recorded) == 3:
            raise WorkerKilled

    monkeypatch.setattr(judging._JudgeJob, "record", killed_after_three)
    with pytest.raises(WorkerKilled):
        judging.judge_run(job_id=job.pk)
    assert fake_openai.calls == 3
    monkeypatch.setattr(judging._JudgeJob, "record", real)
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert fake_openai.calls == 6  # one call per item, over both attempts
    _assert_all_rated_as_the_server_said()


def test_gemini_end_to_end(settings, fake_gemini, shapes_source, numbered_completions):
    settings.GEMINI_API_KEY = "gm-test-key"
    settings.GEMINI_BASE_URL = fake_gemini.base_url
    fake_gemini.retry_after = 0.05
    fake_gemini.push_faults("429", "score_high")
    config = judging.judge_config_from_spec("gemini:gemini-2.5-flash")
    job = _run(config, shapes_source)
    assert job.status == Job.Status.SUCCEEDED and fake_gemini.calls == 8
    _assert_all_rated_as_the_server_said()
    request = fake_gemini.requests[-1]
    assert request.images and request.images[0][0] == "image/png"
    assert job.metrics["cost_usd"] > 0


def test_the_judge_answers_questions_itself_and_reruns_pay_nothing(
    openai_judge, fake_openai, shapes_source
):
    from tests.fake_judge_servers import free_answer

    job = judging.judge_launch(
        judge_config=openai_judge,
        selection={"source_id": shapes_source.pk},
        mode="answer",
        limits=FAST,
        enqueue=False,
    )
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and fake_openai.calls == 6
    answers = JudgeCall.objects.filter(mode=JudgeCall.Mode.ANSWER, status="ok")
    assert answers.count() == 6 and not Rating.objects.exists()
    sent = fake_openai.requests[0]
    assert "response_format" not in sent.body and sent.images
    stored = {call.result["answer"] for call in answers}
    assert stored == {free_answer(r.prompt) for r in fake_openai.requests}
    again = judging.judge_launch(
        judge_config=openai_judge,
        selection={"source_id": shapes_source.pk},
        mode="answer",
        enqueue=False,
    )
    judging.judge_run(job_id=again.pk)
    assert fake_openai.calls == 6


def test_prompts_of_the_same_content_in_flight_together_share_one_call(
    openai_judge, fake_openai, shapes_source, tmp_path
):
    """POPE repeats an image and question; two sources may hold the same items. The second
    of two identical items waits for the first call instead of paying again and then
    breaking the one-answer-per-key constraint."""
    from datasets_app.core.shapes import make_shapes
    from datasets_app.services.imports import prompts_import

    make_shapes(tmp_path / "again", n=6, seed=4)  # the fixture's images and questions
    twin = prompts_import(
        path=tmp_path / "again" / "scienceqa.parquet", source_name="twin", fmt="scienceqa"
    ).source
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    prompts = [p for s in (shapes_source, twin) for p in s.prompts.order_by("pk")]
    Completion.objects.bulk_create(
        Completion(prompt=p, checkpoint=checkpoint, text=f"Answer {i}.", sample_index=i)
        for p in prompts
        for i in range(2)
    )
    job = judging.judge_launch(
        judge_config=openai_judge,
        selection={"prompt_ids": [p.pk for p in prompts]},
        limits=RunLimits(concurrency=8),
        enqueue=False,
    )
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert fake_openai.calls == 6 and JudgeCall.objects.count() == 6
    assert Rating.objects.count() == 24  # every completion of both sources
    assert job.metrics["cache_hits"] == 6 and job.progress_done == 12
