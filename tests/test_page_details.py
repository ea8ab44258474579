"""Small things a walk through the pages found: the annotation header and judge hints, job
pages that link to what they made, the generation estimate, the version page, the
comparison's charts and multi-selects, styled 403 and 404 pages."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from annotation.models import ATTRIBUTES, Completion, Rating
from annotation.services import campaigns
from common.charts import bars_svg
from datasets_app.models import DatasetVersion
from datasets_app.services import exports
from tests import factories
from tests.test_evaluation_live import finish_evaluation, queued_evaluation
from training.models import Checkpoint, TrainingJob
from workers import jobs
from workers.models import Job

pytestmark = pytest.mark.django_db


def _finished(job: Job) -> Job:
    jobs.job_finish(jobs.job_claim(job.pk))
    job.refresh_from_db()
    return job


def _hrefs(body: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]*)"', body)]


# --- annotation -------------------------------------------------------------------------


@pytest.fixture
def judged_campaign(shapes_source):
    checkpoint = factories.checkpoint("policy")
    judge = factories.judge("oracle-judge")
    for p in shapes_source.prompts.order_by("id")[:3]:
        for i in range(2):
            c = Completion.objects.create(prompt=p, checkpoint=checkpoint, sample_index=i)
            Rating.objects.create(completion=c, judge=judge, **dict.fromkeys(ATTRIBUTES, 3))
    return campaigns.campaign_create(
        name="hints",
        selection={"source_id": shapes_source.pk},
        show_judge_suggestions=True,
        suggestion_judge=judge,
    )


def test_the_item_header_says_which_item_of_the_campaign_this_is(
    client, annotator, judged_campaign
):
    client.force_login(annotator)
    first = client.get(reverse("annotation:next", args=[judged_campaign.pk]), follow=True)
    assert "Item 1 of 3 · 0 done" in first.content.decode()
    assignment = first.context["assignment"]
    payload = {
        "scores": {str(c): dict.fromkeys(ATTRIBUTES, 2) for c in assignment.item.completion_ids},
        "tie": True,
        "token": uuid.uuid4().hex,
    }
    submitted = client.post(
        reverse("annotation:submit", args=[assignment.pk]), payload, content_type="application/json"
    )
    assert submitted.status_code == 200, submitted.content
    second = client.get(reverse("annotation:next", args=[judged_campaign.pk]), follow=True)
    assert "Item 2 of 3 · 1 done" in second.content.decode()
    again = client.get(reverse("annotation:item", args=[assignment.pk]))  # undo goes back
    assert "Item 1 of 3 · 1 done" in again.content.decode()


def test_the_judge_hints_are_labelled(client, annotator, judged_campaign):
    client.force_login(annotator)
    body = client.get(reverse("annotation:next", args=[judged_campaign.pk]), follow=True)
    body = body.content.decode()
    assert body.count('<th scope="col" class="suggestion"') == 2  # one per response
    assert 'title="scores suggested by judge oracle-judge">judge</th>' in body
    assert body.count('aria-label="judge suggests 3"') == 2 * len(ATTRIBUTES)


# --- job pages link to what they made --------------------------------------------------------


def test_a_generation_job_links_to_its_completions_and_to_judging(client, staff_user):
    src, ckpt = factories.source("shapes"), factories.checkpoint("tiny")
    prompts = [factories.prompt(src) for _ in range(2)]
    job = _finished(
        jobs.job_create(
            kind=Job.Kind.GENERATION,
            queue="gpu",
            params={
                "checkpoint_id": ckpt.pk,
                "selection": {"source_id": src.pk},
                "prompt_ids": [p.pk for p in prompts],
            },
            created_by=staff_user,
        )
    )
    client.force_login(staff_user)
    links = _hrefs(client.get(reverse("workers:job", args=[job.pk])).content.decode())
    assert reverse("datasets_app:prompt", args=[prompts[0].pk]) in links
    assert f"{reverse('datasets_app:prompts')}?source={src.pk}" in links
    judge = [h for h in links if h.startswith(reverse("annotation:judge") + "?")]
    assert judge and parse_qs(urlsplit(judge[0]).query) == {
        "checkpoint": [str(ckpt.pk)],
        "source": [str(src.pk)],
    }
    form = client.get(judge[0]).context["form"]  # the Judge page opens on what was made
    assert form["checkpoint"].value() == str(ckpt.pk) and form["source"].value() == str(src.pk)


def test_an_export_job_links_to_its_downloads(client, curator):
    version = DatasetVersion.objects.create(name="pairs", kind="dpo", strategy="best_vs_worst")
    folder = "exports/pairs/v1-abc"
    for name in ("train.parquet", "README.md"):
        default_storage.save(f"{folder}/{name}", ContentFile(b"x"))
    version.export_path = folder
    version.save(update_fields=["export_path"])
    job = _finished(
        jobs.job_create(kind=Job.Kind.EXPORT, params={"version_id": version.pk}, created_by=curator)
    )
    client.force_login(curator)
    for name in ("workers:job", "workers:job_progress"):
        body = client.get(reverse(name, args=[job.pk])).content.decode()
        links = _hrefs(body)
        for file_name, url in exports.export_files(version):
            assert f'">Download {file_name}</a>' in body and url in links
        assert reverse("datasets_app:version", args=[version.pk]) in links


def test_a_queued_export_has_no_download_links_yet(client, curator):
    version = DatasetVersion.objects.create(name="pairs", kind="dpo", strategy="best_vs_worst")
    job = jobs.job_create(
        kind=Job.Kind.EXPORT, params={"version_id": version.pk}, created_by=curator
    )
    client.force_login(curator)
    assert "Download" not in client.get(reverse("workers:job", args=[job.pk])).content.decode()


@pytest.fixture
def trained(tmp_path, staff_user):
    """A base checkpoint with an earlier evaluation, and a finished run that trained on it."""
    base = factories.checkpoint("tiny-base")
    earlier = queued_evaluation(tmp_path, checkpoint=base)
    finish_evaluation(earlier)
    version = DatasetVersion.objects.create(name="sft-set", kind="sft", strategy="rejection")
    job = _finished(jobs.job_create(kind=Job.Kind.TRAINING, queue="gpu", created_by=staff_user))
    training = TrainingJob.objects.create(
        name="sft-1", recipe="sft", base_checkpoint=base, dataset_version=version, job=job
    )
    child = Checkpoint.objects.create(
        name="sft-1", kind="trained", model_path="x", parent=base, training_job=training
    )
    return {"base": base, "earlier": earlier, "training": training, "child": child}


def test_a_training_run_links_to_evaluating_its_checkpoint_prefilled(client, staff_user, trained):
    client.force_login(staff_user)
    body = client.get(reverse("training:training", args=[trained["training"].pk])).content
    link = next(
        h for h in _hrefs(body.decode()) if h.startswith(reverse("training:evaluations") + "?")
    )
    assert ">Evaluate this checkpoint</a>" in body.decode()
    query = parse_qs(urlsplit(link).query)
    earlier = trained["earlier"]
    assert query["checkpoint"] == [str(trained["child"].pk)]
    assert query["task"] == ["scienceqa"] and query["data"] == [earlier.data_path]
    form = client.get(link).content.decode()
    assert f'<option value="{trained["child"].pk}" selected>' in form
    assert f'value="{earlier.data_path}"' in form


def test_an_evaluation_links_to_the_comparison_with_its_base(client, staff_user, trained, tmp_path):
    run = queued_evaluation(tmp_path / "child", checkpoint=trained["child"])
    client.force_login(staff_user)
    url = reverse("training:evaluation", args=[run.pk])
    assert "Compare with its base" not in client.get(url).content.decode()  # not finished
    finish_evaluation(run, scores=(1.0, 1.0, 1.0))
    body = client.get(url).content.decode()
    assert "Compare with its base, tiny-base" in body
    link = next(h for h in _hrefs(body) if h.startswith(reverse("training:compare")))
    query = parse_qs(urlsplit(link).query)
    base, child = trained["base"], trained["child"]
    assert query == {
        "checkpoints": [str(base.pk), str(child.pk)],
        "tasks": ["scienceqa"],
        "baseline": [str(base.pk)],
    }
    compare = client.get(link).content.decode()
    assert 'data-checkpoint="tiny-base"' in compare and 'data-checkpoint="sft-1"' in compare


def test_an_evaluation_of_a_base_checkpoint_has_no_comparison_link(client, staff_user, tmp_path):
    run = queued_evaluation(tmp_path)
    finish_evaluation(run)
    client.force_login(staff_user)
    body = client.get(reverse("training:evaluation", args=[run.pk])).content.decode()
    assert "Compare with its base" not in body


# --- generate -------------------------------------------------------------------------------


def test_the_generation_estimate_does_not_ask_for_a_checkpoint_before_anything_is_sent(
    client, staff_user
):
    src = factories.source("shapes")
    for _ in range(3):
        factories.prompt(src)
    client.force_login(staff_user)
    page = client.get(reverse("training:generate")).content.decode()
    assert "This field is required" not in page
    # What htmx sends when the page loads: every field with its initial value, no checkpoint.
    fresh = {
        "checkpoint": "",
        "source": "",
        "split": "",
        "subject": "",
        "prompt_ids": "",
        "limit": "",
        "template": "plain",
        "k": "4",
        "temperature": "0.7",
        "top_p": "1.0",
        "max_new_tokens": "256",
        "seed": "0",
        "steer": "",
        "backend": "auto",
    }
    estimate = client.get(reverse("training:generate_estimate"), fresh).content.decode()
    assert "required" not in estimate and 'data-completions="12"' in estimate
    bad_k = client.get(reverse("training:generate_estimate"), {**fresh, "k": "0"})
    assert "K (samples per prompt): Ensure this value is greater than or equal to 1" in (
        bad_k.content.decode()
    )


def test_a_submitted_generation_form_still_names_the_missing_checkpoint(client, staff_user):
    client.force_login(staff_user)
    body = client.post(reverse("training:generate"), {"k": "4"}).content.decode()
    assert "This field is required" in body


# --- the version page -----------------------------------------------------------------------


def test_the_version_page_shows_parameters_as_a_table_and_sources_by_name(client, curator):
    src, ckpt = factories.source("pope-val"), factories.checkpoint("llava-7b")
    version = DatasetVersion.objects.create(
        name="pairs",
        kind="dpo",
        strategy="best_vs_random_gap",
        params={"gap": 2, "score": "helpfulness+correctness+coherence"},
        selection={"source_id": src.pk, "split": "train", "checkpoint_ids": [ckpt.pk]},
        stats={"per_source": {str(src.pk): 7}, "splits": {"train": 7}, "prompts": 7},
        row_count=7,
    )
    version.sources.set([src])
    client.force_login(curator)
    body = client.get(reverse("datasets_app:version", args=[version.pk])).content.decode()
    assert '<table class="metrics settings params">' in body
    assert "<tr><th>gap</th><td>2</td></tr>" in body
    assert "<tr><th>source</th><td>pope-val</td></tr>" in body
    assert "<tr><th>checkpoints</th><td>llava-7b</td></tr>" in body
    assert f'?source={src.pk}">pope-val</a>' in body
    assert "source_id" not in body and "{&#x27;" not in body  # no raw dicts
    assert "Rows per source</title>" in body and ">pope-val</text>" in body


# --- the comparison -------------------------------------------------------------------------


def test_bars_of_zero_are_drawn_on_axes_with_their_value():
    svg = bars_svg(["base", "dpo"], [0.0, 0.0], "scienceqa: accuracy")
    assert svg.count('class="axis"') == 2
    assert re.findall(r'<text class="value"[^>]*>([^<]*)</text>', svg) == ["0", "0"]
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([\d.]+)"', svg)]
    assert len(heights) == 2 and all(h > 0 for h in heights)


def test_the_comparison_draws_zero_scores(client, staff_user, tmp_path):
    a, b = factories.checkpoint("ck-a"), factories.checkpoint("ck-b")
    for ckpt in (a, b):
        finish_evaluation(queued_evaluation(tmp_path / ckpt.name, checkpoint=ckpt), scores=(0.0,))
    client.force_login(staff_user)
    body = client.get(
        reverse("training:compare"), {"checkpoints": [a.pk, b.pk], "tasks": "scienceqa"}
    ).content.decode()
    assert 'class="axis"' in body
    assert re.findall(r'<text class="value"[^>]*>([^<]*)</text>', body) == ["0", "0"]


def test_the_comparison_multi_selects_say_how_to_pick_several(client, staff_user):
    client.force_login(staff_user)
    body = client.get(reverse("training:compare")).content.decode()
    assert body.count("to pick several") == 2  # checkpoints and tasks, not the baseline


# --- 403 and 404 ----------------------------------------------------------------------------


def test_a_refused_page_is_styled_with_a_way_back(client, annotator, settings):
    settings.DEBUG = False
    client.force_login(annotator)
    response = client.get(reverse("workers:status"))
    body = response.content.decode()
    assert response.status_code == 403
    assert 'data-error="403"' in body and "<h1>Not allowed</h1>" in body
    assert 'class="topbar"' in body and f'href="{reverse("home")}"' in body
    assert f'href="{reverse("annotation:campaigns")}"' in body


def test_a_missing_page_is_styled_with_a_way_back(client, curator, settings):
    settings.DEBUG = False
    client.force_login(curator)
    response = client.get("/data/versions/999999/")
    body = response.content.decode()
    assert response.status_code == 404
    assert 'data-error="404"' in body and "/data/versions/999999/" in body
    assert 'class="topbar"' in body and f'href="{reverse("home")}"' in body


def test_a_missing_page_is_styled_for_an_anonymous_visitor_too(client, settings):
    settings.DEBUG = False
    response = client.get("/no/such/page/")
    body = response.content.decode()
    assert response.status_code == 404 and 'data-error="404"' in body
    assert f'href="{reverse("home")}"' in body
