"""Batch judging (issue 18.1) through the real openai and google-genai SDKs against fake
batch APIs on 127.0.0.1: every item ends rated despite failed and malformed lines, a rerun
makes no call, a resumed job polls the batch it submitted and never submits again, and a
cancel reaches the provider."""

from __future__ import annotations

import threading

import pytest
from django.core.management import CommandError, call_command

from annotation.core.judges.openai_batch import BATCH_PRICE_FACTOR
from annotation.core.judges.pricing import cost_usd
from annotation.core.judges.runner import RunLimits
from annotation.models import JudgeCall, Rating
from annotation.services import judging
from tests.fake_batch_servers import FakeGeminiBatchServer, FakeOpenAIBatchServer
from tests.fake_judge_servers import expected_scores
from workers import jobs
from workers.models import Job

pytestmark = [pytest.mark.django_db]
FAST = RunLimits(concurrency=2, backoff_base_s=0.01, backoff_max_s=0.05, max_attempts=4)
ITEMS = 6  # shapes_source's prompts, four completions each: one call each


SPECS = {"openai": "openai:gpt-4o-mini", "gemini": "gemini:gemini-2.5-flash"}
MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash"}
ONLINE_PATH = {"openai": "/chat/completions", "gemini": ":generateContent"}


@pytest.fixture(params=["openai", "gemini"])
def provider(request) -> str:
    return request.param


@pytest.fixture
def server(provider):
    fake = FakeOpenAIBatchServer if provider == "openai" else FakeGeminiBatchServer
    with fake() as running:
        yield running


@pytest.fixture
def judge(settings, server, provider):
    if provider == "openai":
        settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
        settings.OPENAI_BASE_URL = server.base_url
    else:
        settings.GEMINI_API_KEY = "gm-test-key"
        settings.GEMINI_BASE_URL = server.base_url
    return judging.judge_config_from_spec(SPECS[provider])


def _online(server, provider) -> list:
    return [r for r in server.requests if r.path.split("?")[0].endswith(ONLINE_PATH[provider])]


def _launch(config, source, **extra):
    return judging.judge_launch(
        judge_config=config,
        selection={"source_id": source.pk},
        limits=FAST,
        timeout_s=5.0,
        batch=True,
        poll_s=0.01,
        enqueue=False,
        **extra,
    )


def _run(config, source) -> Job:
    job = _launch(config, source)
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def _all_rated_as_the_server_said():
    assert Rating.objects.count() == ITEMS * 4
    for rating in Rating.objects.select_related("completion"):
        assert rating.scores == expected_scores(rating.completion.text)


def test_a_batch_rates_everything_despite_failed_and_malformed_lines(
    judge, server, provider, shapes_source, numbered_completions
):
    server.validating_polls, server.progress_polls = 3, 4  # it takes a while
    server.line_faults = ["error", "not_json", None, "broken", "score_7", None]
    job = _run(judge, shapes_source)
    assert job.status == Job.Status.SUCCEEDED, job.error
    _all_rated_as_the_server_said()
    batch = job.metrics["batch"]
    assert batch["status"] == "completed"
    assert batch["rated_in_batch"] == 2 and batch["asked_again_online"] == 4
    if provider == "openai":
        # The provider counts the unreadable line as completed; only the 500 as failed.
        assert batch["counts"] == {"total": ITEMS, "completed": 5, "failed": 1}
    assert len(server.batches) == 1  # one submission
    assert len(_online(server, provider)) == 4
    # The two lines rated in the batch cost half the online price of their tokens; the
    # four asked again online, the full price.
    full = {c.pk: cost_usd(MODELS[provider], _usage(c)) for c in JudgeCall.objects.all()}
    assert all(price > 0 for price in full.values())
    halves = [c for c in JudgeCall.objects.all() if c.cost_usd == pytest.approx(full[c.pk] / 2)]
    whole = [c for c in JudgeCall.objects.all() if c.cost_usd == pytest.approx(full[c.pk])]
    assert BATCH_PRICE_FACTOR == 0.5 and (len(halves), len(whole)) == (2, 4)

    # A rerun finds every item rated: no request at all.
    calls = server.calls
    again = _run(judge, shapes_source)
    assert again.status == Job.Status.SUCCEEDED and server.calls == calls
    assert "batch" not in again.metrics


def _usage(call: JudgeCall):
    from annotation.core.judges.base import Usage

    return Usage(call.input_tokens, call.output_tokens)


@pytest.mark.parametrize("outcome", ["expired", "failed", "cancelled"])
def test_a_batch_that_ends_early_leaves_the_rest_to_online_calls(
    judge, server, shapes_source, numbered_completions, outcome
):
    server.outcome = outcome
    job = _run(judge, shapes_source)
    assert job.status == Job.Status.SUCCEEDED, job.error
    _all_rated_as_the_server_said()
    rated = 0 if outcome == "failed" else ITEMS // 2
    assert job.metrics["batch"]["status"] == outcome
    assert job.metrics["batch"]["rated_in_batch"] == rated
    assert job.metrics["batch"]["asked_again_online"] == ITEMS - rated


def test_a_resumed_batch_job_polls_its_batch_and_never_submits_again(
    judge, server, provider, shapes_source, numbered_completions, monkeypatch
):
    from annotation.core.judges.gemini_batch import GeminiBatch
    from annotation.core.judges.openai_batch import OpenAIBatch

    server.progress_polls = 1000  # never done while the first worker lives
    job = _launch(judge, shapes_source)
    polled = threading.Event()
    kind = OpenAIBatch if provider == "openai" else GeminiBatch
    real_state = kind.state

    def state_then_die(self, batch_id):
        current = real_state(self, batch_id)
        if current.status == "in_progress":
            polled.set()
            raise KeyboardInterrupt  # the worker process dies mid-wait
        return current

    monkeypatch.setattr(kind, "state", state_then_die)
    with pytest.raises(KeyboardInterrupt):
        judging.judge_run(job_id=job.pk)
    assert polled.is_set()
    job.refresh_from_db()
    batch_id = job.metrics["batch"]["id"]  # kept before the wait
    assert batch_id
    monkeypatch.undo()

    # The reaper marks it failed; Resume runs it again, on the same batch.
    Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED, error="heartbeat")
    job.refresh_from_db()
    from workers.services import job_resume

    job_resume(job=job)
    server.progress_polls = 0
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert len(server.batches) == 1 and job.metrics["batch"]["id"] == batch_id
    _all_rated_as_the_server_said()
    assert not _online(server, provider)


def test_cancelling_a_batch_job_cancels_the_batch(
    judge, server, shapes_source, numbered_completions
):
    server.progress_polls = 1000
    job = _launch(judge, shapes_source)
    real_progress = jobs.job_progress
    seen = []

    def cancel_on_second_poll(job_row, **kw):
        seen.append(kw)
        if len(seen) == 2:
            jobs.job_request_cancel(job=job_row)
        return real_progress(job_row, **kw)

    import annotation.services.judge_batches as judge_batches

    judge_batches.job_progress = cancel_on_second_poll
    try:
        judging.judge_run(job_id=job.pk)
    finally:
        judge_batches.job_progress = real_progress
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert next(iter(server.batches.values()))["cancel_requested"]
    assert not Rating.objects.exists()


def test_batch_mode_is_refused_where_it_does_not_exist(shapes_source, numbered_completions):
    with pytest.raises(CommandError, match="batch mode rates with openai, gemini judges only"):
        call_command("judge", "--judge", "oracle", "--source", "sqa", "--batch")
    assert not Job.objects.exists()


def test_the_judge_command_runs_a_batch(
    judge, server, provider, shapes_source, numbered_completions, capsys
):
    call_command(
        "judge", "--judge", SPECS[provider], "--source", "sqa", "--batch", "--poll-s", "0.01"
    )
    assert Rating.objects.count() == ITEMS * 4 and len(server.batches) == 1
