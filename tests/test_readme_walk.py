"""The README's browser walk (issue 14 point 6), clicked through in Chromium on the demo set-up:
from the start `tiny-llava (shapes SFT)`, Generate -> Judge -> Build a version -> Train DPO ->
Evaluate both -> Compare, which must show DPO's gain on POPE with its interval (screenshot
var/screenshots/readme-walk-compare.png). Each queued job's body runs here, as the worker
would run it; everything else is the pages."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotation.services import judging
from datasets_app.models import DatasetVersion
from tests.test_browser import SHOTS, _log_in
from tests.test_browser import page as page
from training.models import Checkpoint, EvaluationRun, TrainingJob
from training.services import evaluations, generation, trainings
from training.services.start import START_NAME
from workers.demo import demo_setup
from workers.models import Job

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

OVERRIDES = """finetune=full
freeze_vision_tower=false
train_projector=true
loss_type=["sigmoid","sft"]
learning_rate=4e-4
max_steps=300
per_device_train_batch_size=16
torch_threads=2"""


def _job_id(url: str) -> int:
    return int(re.search(r"/(\d+)/$", url).group(1))


def test_the_readme_walk_from_the_start_ends_on_the_gain_with_its_interval(
    settings, tmp_path, start_cache, live_server, page
):
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    settings.START_CACHE_DIR = str(start_cache)
    demo_setup(username="admin", password="pw-admin", n_images=120, seed=0, log=lambda _: None)
    start = Checkpoint.objects.get(name=START_NAME)
    heldout = settings.VAR_DIR / "demo" / "shapes-n120-s0" / "pope.parquet"
    base = live_server.url
    _log_in(page, base, "admin")

    # 1. Generate: K=4 at T=0.7 on the pool, asked as POPE asks.
    page.click("nav >> text=Generate")
    page.select_option("select[name=checkpoint]", label=START_NAME)
    page.select_option("select[name=source]", label="shapes-pool")
    page.select_option("select[name=template]", "short_answer")
    page.fill("input[name=k]", "4")
    page.fill("input[name=temperature]", "0.7")
    page.fill("input[name=max_new_tokens]", "4")
    page.click("text=Launch on the gpu queue")
    page.wait_for_url("**/ops/jobs/*/")
    generation.generation_run(job_id=_job_id(page.url))
    assert Job.objects.get(pk=_job_id(page.url)).status == Job.Status.SUCCEEDED

    # 2. Judge: the oracle rates every completion.
    page.click("nav >> text=Judge")
    page.fill("input[name=judge]", "oracle")
    page.select_option("select[name=source]", label="shapes-pool")
    page.click("text=Launch on the judge queue")
    page.wait_for_url("**/ops/jobs/*/")
    judging.judge_run(job_id=_job_id(page.url))
    assert Job.objects.get(pk=_job_id(page.url)).status == Job.Status.SUCCEEDED

    # 3. Datasets -> Build a version: best_vs_random_gap, preview, save.
    page.goto(f"{base}{reverse('datasets_app:version_new')}")
    page.fill("input[name=name]", "walk-dpo")
    page.select_option("select[name=strategy]", "best_vs_random_gap")
    page.select_option("select[name=source]", label="shapes-pool")
    page.click("button[name=preview]")
    page.wait_for_load_state()
    page.click("button[name=save]")
    page.wait_for_url("**/data/versions/*/")
    version = DatasetVersion.objects.get(name="walk-dpo")
    assert version.kind == "dpo" and version.row_count > 300, version.stats

    # 4. Train DPO from the start with the README's overrides.
    page.goto(f"{base}{reverse('training:training_new')}")
    page.select_option("select[name=recipe]", "dpo")
    page.select_option("select[name=dataset_version]", str(version.pk))
    page.select_option("select[name=base_checkpoint]", label=START_NAME)
    page.fill("textarea[name=overrides]", OVERRIDES)
    page.fill("input[name=name]", "walk-dpo")
    page.click("text=Launch on the gpu queue")
    page.wait_for_url("**/train/runs/*/")
    training = TrainingJob.objects.get(name="walk-dpo")
    trainings.training_run(job_id=training.job_id, poll_s=0.5)
    training.job.refresh_from_db()
    assert training.job.status == Job.Status.SUCCEEDED, training.job.error
    dpo = trainings.training_checkpoint(training)

    # 5. Evaluate the start and the new checkpoint on the held-out POPE file.
    for checkpoint in (start, dpo):
        page.click("nav >> text=Evaluate")
        page.select_option("select[name=checkpoint]", label=checkpoint.name)
        page.select_option("select[name=task]", "pope")
        page.fill("input[name=data]", str(heldout))
        page.click("text=Launch on the gpu queue")
        page.wait_for_url("**/train/evaluations/*/")
        run = EvaluationRun.objects.get(pk=_job_id(page.url))
        evaluations.evaluation_run(job_id=run.job_id)

    # 6. Compare: the DPO row shows its gain with a paired bootstrap interval.
    compare = reverse("training:compare")
    page.goto(f"{base}{compare}?checkpoints={start.pk}&checkpoints={dpo.pk}&tasks=pope")
    row = page.locator(f".compare-table[data-task=pope] tr[data-checkpoint='{dpo.name}']")
    shown = row.locator("td.diff").inner_text()
    gain, interval = shown.split("[", 1)
    assert float(gain) >= 0.05 and float(interval.split(",")[0]) > 0, shown
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "readme-walk-compare.png"), full_page=True)
