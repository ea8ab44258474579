"""Judging jobs with the oracle: ratings written whole, resumable, cached, cancellable."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command

from annotation.core.judges.runner import RunLimits
from annotation.models import ATTRIBUTES, Completion, JudgeCall, Rating
from annotation.services import judging
from training.models import Checkpoint
from workers import jobs
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]
LETTERS = "ABCD"


@pytest.fixture
def completions(shapes_source):
    """Four completions per prompt: right, wrong, no answer, right but buried."""
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    rows = []
    for prompt in shapes_source.prompts.all():
        right = LETTERS[prompt.answer_index]
        wrong = LETTERS[(prompt.answer_index + 1) % len(prompt.choices)]
        texts = [
            f"The answer is {right}.",
            f"The answer is {wrong}.",
            "I cannot tell.",
            " ".join(["Looking at the picture carefully,"] * 12) + f" the answer is {right}.",
        ]
        rows += [
            Completion(prompt=prompt, checkpoint=checkpoint, text=t, sample_index=i)
            for i, t in enumerate(texts)
        ]
    Completion.objects.bulk_create(rows)
    return checkpoint


def _launch(source, **extra):
    config = judging.judge_config_from_spec("oracle")
    return judging.judge_launch(
        judge_config=config, selection={"source_id": source.pk}, enqueue=False, **extra
    )


def test_the_oracle_rates_every_completion_and_the_right_one_wins(shapes_source, completions):
    job = _launch(shapes_source)
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (job.progress_done, job.progress_total) == (6, 6)
    assert Rating.objects.count() == 24 and JudgeCall.objects.count() == 6
    for prompt in shapes_source.prompts.all():
        by_index = {
            r.completion.sample_index: r
            for r in Rating.objects.filter(completion__prompt=prompt).select_related("completion")
        }
        assert by_index[0].correctness == 4 and by_index[1].correctness == 1
        assert by_index[2].correctness == 0 and by_index[3].helpfulness == 3
        assert "known answer" in by_index[0].reasoning
    assert job.metrics["calls"] == 6 and job.metrics["failures"] == 0


def test_k_per_call_splits_a_prompts_completions(shapes_source, completions):
    judging.judge_run(job_id=_launch(shapes_source, k_per_call=2).pk)
    assert JudgeCall.objects.count() == 12 and Rating.objects.count() == 24
    assert {len(c.completion_ids) for c in JudgeCall.objects.all()} == {2}


def test_a_rerun_makes_no_call_and_a_lost_rating_comes_from_the_cache(shapes_source, completions):
    judging.judge_run(job_id=_launch(shapes_source).pk)
    again = _launch(shapes_source)
    judging.judge_run(job_id=again.pk)
    again.refresh_from_db()
    assert again.metrics["calls"] == 0 and again.metrics["skipped"] == 6

    Rating.objects.filter(completion__prompt=shapes_source.prompts.first()).delete()
    third = _launch(shapes_source)
    judging.judge_run(job_id=third.pk)
    third.refresh_from_db()
    assert (third.metrics["calls"], third.metrics["cache_hits"]) == (0, 1)
    assert Rating.objects.count() == 24 and JudgeCall.objects.count() == 6


class WorkerKilled(BaseException):
    pass


def test_a_killed_run_resumes_without_second_calls_or_duplicates(
    shapes_source, completions, monkeypatch
):
    job = _launch(shapes_source, limits=RunLimits(concurrency=1))
    real = judging._JudgeJob.record
    seen = []

    def dies_on_the_third(self, outcome):
        if len(seen) == 2:
            raise WorkerKilled
        seen.append(outcome.item.key)
        real(self, outcome)

    monkeypatch.setattr(judging._JudgeJob, "record", dies_on_the_third)
    with pytest.raises(WorkerKilled):
        judging.judge_run(job_id=job.pk)
    assert JudgeCall.objects.count() == 2 and Rating.objects.count() == 8

    monkeypatch.setattr(judging._JudgeJob, "record", real)
    judging.judge_run(job_id=job.pk)  # redelivered
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 2
    assert Rating.objects.count() == 24 and JudgeCall.objects.count() == 6
    assert job.metrics["skipped"] == 2


def test_cancel_stops_the_run_and_keeps_what_was_rated(shapes_source, completions, monkeypatch):
    job = _launch(shapes_source, limits=RunLimits(concurrency=1))
    real = judging._JudgeJob.record

    def cancel_after_first(self, outcome):
        real(self, outcome)
        jobs.job_request_cancel(job=Job.objects.get(pk=job.pk))

    monkeypatch.setattr(judging._JudgeJob, "record", cancel_after_first)
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert 1 <= JudgeCall.objects.count() < 6
    assert Rating.objects.count() == 4 * JudgeCall.objects.count()


def test_a_missing_api_key_is_refused_before_any_work(shapes_source, completions, settings):
    settings.OPENAI_API_KEY = "sk-test"
    config = judging.judge_config_from_spec("openai:gpt-4o-mini")
    settings.OPENAI_API_KEY = ""  # unset since the configuration was saved
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        judging.judge_launch(
            judge_config=config, selection={"source_id": shapes_source.pk}, enqueue=False
        )
    assert Job.objects.count() == 0
    with pytest.raises(CommandError, match="GEMINI_API_KEY"):
        settings.GEMINI_API_KEY = ""
        call_command("judge", judge="gemini:gemini-2.5-flash", source="sqa")


def test_judge_specs_are_checked(settings):
    settings.OPENAI_API_KEY = "sk-test"
    with pytest.raises(ValueError, match="unknown judge provider"):
        judging.judge_config_from_spec("claude:opus")
    with pytest.raises(ValueError, match="needs a model"):
        judging.judge_config_from_spec("openai")
    with pytest.raises(ValueError, match="unknown prompt version"):
        judging.judge_config_from_spec("oracle", prompt_version="v7")
    first = judging.judge_config_from_spec("openai:gpt-4o-mini")
    assert judging.judge_config_from_spec("openai:gpt-4o-mini") == first


def test_judge_command_runs_inline_and_enqueues(shapes_source, completions, capsys):
    call_command("judge", judge="oracle", source="sqa", limit=2)
    assert Rating.objects.count() == 8
    assert "2/2 items" in capsys.readouterr().out
    call_command("judge", judge="oracle", source="sqa", enqueue=True)
    queued = Job.objects.get(status=Job.Status.QUEUED)
    assert queued.queue == "judge"


def test_each_mode_says_how_it_groups_what_it_skips_and_how_it_calls(shapes_source, completions):
    rate, answer = _launch(shapes_source, k_per_call=3), _launch(shapes_source, mode="answer")
    config = judging.judge_config_from_spec("oracle")
    judge = judging.build_judge(config)
    rating = judging._JOBS["rate"](SimpleNamespace(job=rate, metrics={}), config)
    answering = judging._JOBS["answer"](SimpleNamespace(job=answer, metrics={}), config)
    groups = rating.groups(rate.params)
    assert [len(c) for _, c in groups] == [3, 1] * 6 and rating.call(judge) is None
    prompts = answering.groups(answer.params)
    assert [c for _, c in prompts] == [[]] * 6 and answering.call(judge) is not None
    Rating.objects.create(completion=groups[0][1][0], judge=config, **dict.fromkeys(ATTRIBUTES, 2))
    rating.load_rated(groups)
    answering.load_rated(groups)
    assert rating.rated == {groups[0][1][0].pk} and answering.rated == set()


def test_a_job_in_a_mode_no_judge_runs_fails_clearly_and_writes_nothing(shapes_source, completions):
    job = _launch(shapes_source)
    job.params = {**job.params, "mode": "rewrite"}
    job.save(update_fields=["params"])
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "mode 'rewrite'" in job.error
    assert not JudgeCall.objects.exists() and not Rating.objects.exists()


def test_nothing_to_judge_is_a_clear_error(shapes_source):
    with pytest.raises(ValueError, match="no selected prompt has completions"):
        _launch(shapes_source)


def test_staff_launch_a_judge_from_the_page(
    client, staff_user, annotator, shapes_source, completions, settings
):
    from django.urls import reverse

    url = reverse("annotation:judge")
    data = {
        "judge": "oracle",
        "prompt_version": "v1",
        "temperature": 0,
        "source": shapes_source.pk,
        "k_per_call": 4,
        "concurrency": 4,
    }
    client.force_login(annotator)
    assert client.post(url, data).status_code == 403
    client.force_login(staff_user)
    response = client.post(url, data)
    job = Job.objects.get()
    assert response["Location"] == reverse("workers:job", args=[job.pk])
    assert job.queue == "judge" and job.params["limits"]["concurrency"] == 4
    assert job.params["mode"] == "rate" and "both_orders" not in job.params
    client.post(url, {**data, "mode": "pairwise", "both_orders": "on"})
    pairwise = Job.objects.latest("pk")
    assert pairwise.params["mode"] == "pairwise" and pairwise.params["both_orders"] is True
    pairwise.delete()
    settings.OPENAI_API_KEY = ""
    refused = client.post(url, {**data, "judge": "openai:gpt-4o"}).content.decode()
    assert "OPENAI_API_KEY is not set" in refused and Job.objects.count() == 1
