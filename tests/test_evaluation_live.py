"""The evaluation page's live part: it polls while the job runs and then shows the final
state (status, metrics, items) without a reload, as the training page does."""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets_app.core.shapes import make_shapes
from tests import factories
from training.models import EvaluationItem, EvaluationRun
from training.services import evaluations
from workers import jobs

pytestmark = pytest.mark.django_db


def queued_evaluation(tmp_path, *, checkpoint=None) -> EvaluationRun:
    make_shapes(tmp_path / "shapes", n=4, seed=2)
    return evaluations.evaluation_launch(
        checkpoint=checkpoint or factories.checkpoint("policy"),
        task="scienceqa",
        data=str(tmp_path / "shapes" / "scienceqa.parquet"),
        enqueue=False,
    )


def finish_evaluation(run: EvaluationRun, *, scores: tuple[float, ...] = (1.0, 0.0, 1.0)) -> None:
    """What the gpu worker writes when the run ends: items, metrics, the job's end."""
    job = jobs.job_claim(run.job_id)
    EvaluationItem.objects.bulk_create(
        EvaluationItem(
            run=run,
            position=i,
            key=f"q{i}",
            subject="NAT",
            prompt=f"question {i}",
            answers=["A"],
            parsed=["A"],
            gold="A" if score else "B",
            score=score,
        )
        for i, score in enumerate(scores)
    )
    accuracy = sum(scores) / len(scores)
    run.metrics = {"accuracy": accuracy, "n": len(scores), "parse_failures": 0}
    run.item_count = len(scores)
    run.save(update_fields=["metrics", "item_count"])
    jobs.JobRun(job).set_metrics(accuracy=accuracy)
    jobs.job_finish(job)


def test_the_live_part_polls_while_queued_and_shows_the_results_once_finished(
    client, staff_user, tmp_path
):
    run = queued_evaluation(tmp_path)
    client.force_login(staff_user)
    live = reverse("training:evaluation_live", args=[run.pk])
    page = client.get(reverse("training:evaluation", args=[run.pk])).content.decode()
    assert f'hx-get="{live}"' in page and 'data-run-status="queued"' in page

    finish_evaluation(run)
    fragment = client.get(live).content.decode()
    assert 'data-run-status="succeeded"' in fragment
    assert "hx-get" not in fragment  # finished: the page stops polling
    assert "accuracy" in fragment and "0.6667" in fragment
    assert "3 items" in fragment and fragment.count('class="answer"') == 3
    assert "No metrics yet" not in fragment


def test_the_live_part_keeps_the_page_filters(client, staff_user, tmp_path):
    run = queued_evaluation(tmp_path)
    client.force_login(staff_user)
    page = client.get(reverse("training:evaluation", args=[run.pk]), {"wrong": "1"})
    assert "/live/?wrong=1" in page.content.decode()
    finish_evaluation(run)
    fragment = client.get(reverse("training:evaluation_live", args=[run.pk]), {"wrong": "1"})
    assert "1 item" in fragment.content.decode()


def test_only_staff_read_the_live_part(client, curator, tmp_path):
    run = queued_evaluation(tmp_path)
    client.force_login(curator)
    assert client.get(reverse("training:evaluation_live", args=[run.pk])).status_code == 403
