"""Evaluation runs through the site: launch checks, the job body on the tiny model, stored
items and their filters, a judged task through the real OpenAI SDK against the fake server,
the comparison with bootstrap intervals, the `evaluate` command, evaluations requested by a
training job."""

from __future__ import annotations

import statistics

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation.models import ATTRIBUTES
from annotation.services import judging
from datasets_app.core.shapes import make_shapes
from tests.fake_judge_servers import expected_scores
from training.models import Checkpoint, EvaluationItem, EvaluationRun
from training.services import evaluations
from workers.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


@pytest.fixture
def shapes(tmp_path):
    make_shapes(tmp_path / "shapes", n=20, seed=3)
    return tmp_path / "shapes"


@pytest.fixture
def base(tiny_dir) -> Checkpoint:
    return Checkpoint.objects.create(name="tiny-base", model_path=str(tiny_dir))


def _run(checkpoint, **spec) -> EvaluationRun:
    run = evaluations.evaluation_launch(checkpoint=checkpoint, enqueue=False, **spec)
    evaluations.evaluation_run(job_id=run.job_id)
    run.refresh_from_db()
    assert run.job.status == Job.Status.SUCCEEDED, run.job.error
    return run


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"task": "mmlu"}, "unknown task 'mmlu'"),
        ({"data": "/nowhere.parquet"}, "data file /nowhere.parquet does not exist"),
        ({"temperature": 0.0, "samples": 2}, "temperature 0 is greedy"),
        ({"prompt": "fancy"}, "fancy"),
        ({"task": "helpsteer_heldout"}, "helpsteer_heldout needs a judge"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"task": "pope", "split": "sideways"}, "sideways"),
        ({"color": "red"}, "unknown evaluation keys: color"),
    ],
)
def test_bad_evaluations_are_refused_before_anything_is_queued(shapes, base, spec, message):
    values = {"task": "scienceqa", "data": str(shapes / "scienceqa.parquet"), **spec}
    if spec.get("task") == "pope":
        values["data"] = str(shapes / "pope.parquet")
    with pytest.raises(ValueError, match=message):
        evaluations.evaluation_launch(checkpoint=base, enqueue=False, **values)
    assert not EvaluationRun.objects.exists() and not Job.objects.exists()


def test_a_file_in_the_wrong_format_is_refused(shapes, base):
    with pytest.raises(ValueError, match=r"pope\.parquet, row 1: missing column 'choices'"):
        evaluations.evaluation_launch(
            checkpoint=base, task="scienceqa", data=str(shapes / "pope.parquet"), enqueue=False
        )


@pytest.mark.slow
def test_a_scienceqa_run_stores_every_item_and_the_page_filters_them(
    shapes, base, client, staff_user
):
    run = _run(base, task="scienceqa", data=str(shapes / "scienceqa.parquet"), limit=12)
    items = list(run.items.order_by("position"))
    assert run.item_count == len(items) == 12
    assert run.metrics["n"] == 12 and run.job.progress_done == 12
    # the stored scores are the metric: accuracy is their mean
    assert run.metrics["accuracy"] == pytest.approx(statistics.mean(i.score for i in items))
    assert run.metrics["parse_failures"] == sum(i.parsed.count(None) for i in items)
    assert all(i.prompt.endswith("directly.") and len(i.answers) == 1 for i in items)
    assert {i.subject for i in items} <= {"NAT", "SOC", "LAN"}

    client.force_login(staff_user)
    url = reverse("training:evaluation", args=[run.pk])
    page = client.get(url).content.decode()
    assert "by_subject." in page and page.count('class="answer"') == 12
    wrong = sum(1 for i in items if i.score < 1)
    page = client.get(url, {"wrong": "1"}).content.decode()
    assert f"{wrong} item" in page
    subject = items[0].subject
    page = client.get(url, {"subject": subject}).content.decode()
    assert f"{sum(1 for i in items if i.subject == subject)} item" in page


@pytest.mark.slow
def test_a_judged_task_goes_through_the_real_openai_sdk(shapes, base, settings, fake_openai):
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_BASE_URL = fake_openai.base_url
    judge = judging.judge_config_from_spec("openai:gpt-4o-mini")
    data = shapes / "held_out.jsonl"
    data.write_text('{"question": "Describe a circle."}\n{"question": "Name two colours."}\n')
    run = _run(base, task="helpsteer_heldout", data=str(data), judge_id=judge.pk)
    answers = [i.answers[0] for i in run.items.order_by("position")]
    for attribute in ATTRIBUTES:  # the fake server's scores are a hash of each answer
        expected = statistics.mean(expected_scores(a)[attribute] for a in answers)
        assert run.metrics[attribute] == pytest.approx(expected)
    assert len(fake_openai.requests) == 2


@pytest.mark.slow
def test_the_comparison_shows_differences_with_intervals(
    shapes, base, tiny_dir, client, staff_user
):
    other = Checkpoint.objects.create(name="other", model_path=str(tiny_dir))
    data = str(shapes / "scienceqa.parquet")
    first = _run(base, task="scienceqa", data=data, limit=10)
    # The same weights with sampling: other answers on the same items
    second = _run(other, task="scienceqa", data=data, limit=10, temperature=1.0, seed=5)
    tables = evaluations.evaluation_compare(checkpoints=[base, other], tasks=["scienceqa"])
    (table,) = tables
    base_row, other_row = table["rows"]
    assert "diff" not in base_row
    diff = other_row["diff"]
    assert diff["paired"] and diff["n"] == 10
    assert diff["diff"] == pytest.approx(second.metrics["accuracy"] - first.metrics["accuracy"])
    assert diff["low"] <= diff["diff"] <= diff["high"]
    assert table["breakdowns"][0]["label"] == "subject"

    client.force_login(staff_user)
    page = client.get(
        reverse("training:compare"),
        {"checkpoints": [base.pk, other.pk], "tasks": ["scienceqa", "pope"]},
    ).content.decode()
    assert "no finished pope run" in page and "<svg" in page
    assert f"{diff['diff']:.3f}" in page


@pytest.mark.slow
def test_the_evaluate_command_prints_the_metric_table(shapes, base, capsys):
    call_command(
        "evaluate", "--checkpoint", "tiny-base", "--task", "pope",
        "--data", str(shapes / "pope.parquet"), "--limit", "6",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "pope (pope) on tiny-base: 6 items" in out
    for metric in ("accuracy", "precision", "recall", "f1", "yes_ratio", "parse_failures"):
        assert f"  {metric} " in out
    with pytest.raises(CommandError, match="does not exist"):
        call_command("evaluate", "--checkpoint", "tiny-base", "--task", "pope", "--data", "/x")
    assert EvaluationItem.objects.count() == 6


def test_a_training_job_can_ask_for_evaluations(shapes, base, settings, tmp_path):
    from tests.test_training_jobs import shapes_versions
    from training.services import trainings

    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    settings.MEDIA_ROOT = tmp_path / "media"
    version = shapes_versions(tmp_path, base, n=20)["sft"]
    with pytest.raises(ValueError, match="evaluation 1: unknown task"):
        trainings.training_launch(
            recipe="sft", dataset_version=version, base_checkpoint=base,
            evaluations=[{"task": "nope", "data": "x"}], enqueue=False,
        )  # fmt: skip
    spec = {"task": "scienceqa", "data": str(shapes / "scienceqa.parquet"), "limit": 4}
    training = trainings.training_launch(
        recipe="sft", dataset_version=version, base_checkpoint=base, evaluations=[spec],
        overrides={"max_steps": 1, "device": "cpu", "torch_threads": 1, "lora_r": 4},
        enqueue=False,
    )  # fmt: skip
    assert training.evaluations[0]["prompt"] == "lmms"  # normalised at launch
    trainings.training_run(job_id=training.job_id, poll_s=0.2)
    checkpoint = trainings.training_checkpoint(training)
    (run,) = EvaluationRun.objects.filter(checkpoint=checkpoint)
    assert run.training_job == training and run.params["limit"] == 4
    assert run.job.queue == "gpu" and run.job.status == Job.Status.QUEUED


def test_evaluation_lines_parse_for_the_form_and_the_command():
    from training.core.evaluation import parse_evaluation_specs

    text = 'scienceqa /d/sqa.parquet split="test" limit=200\n\n# a comment\npope /d/pope.parquet'
    assert parse_evaluation_specs(text) == [
        {"task": "scienceqa", "data": "/d/sqa.parquet", "split": "test", "limit": 200},
        {"task": "pope", "data": "/d/pope.parquet"},
    ]
    with pytest.raises(ValueError, match="TASK DATA"):
        parse_evaluation_specs("scienceqa")
