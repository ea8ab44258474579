"""What a person does in Chromium: log in, browse prompts, open the admin, run a self-test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datasets_app.services import prompts_import
from datasets_app.shapes import make_shapes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).parent.parent / "var/screenshots"))


@pytest.fixture
def page():
    # Playwright's sync API runs an event loop in this thread; the ORM calls the live
    # server makes happen in its own thread, so the async-safety guard does not apply here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is not installed: run scripts/system-deps"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def _log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/")
    assert "/login/" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_staff_logs_in_browses_prompts_and_admin_thumbnails(
    page, live_server, staff_user, tmp_path
):
    staff_user.is_staff = True
    staff_user.save()
    make_shapes(tmp_path, n=6, seed=5)
    prompts_import(path=tmp_path / "scienceqa.parquet", source_name="shapes-sqa", fmt="scienceqa")
    base = live_server.url
    SHOTS.mkdir(parents=True, exist_ok=True)

    _log_in(page, base, staff_user.username)
    assert "6" in page.locator(".card").first.inner_text()

    page.click("text=Prompts")
    tiles = page.locator(".tile img")
    assert tiles.count() == 6
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.tile img')).every(i => i.naturalWidth > 0)"
    )
    page.screenshot(path=str(SHOTS / "prompts.png"), full_page=True)

    page.locator(".tile").first.click()
    assert page.locator(".prompt-detail li.answer").count() == 1

    page.goto(f"{base}/admin/datasets_app/prompt/")
    thumbs = page.locator("img[alt^='prompt ']")
    assert thumbs.count() == 6
    page.wait_for_function(
        "Array.from(document.querySelectorAll(\"img[alt^='prompt ']\"))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(SHOTS / "admin-prompts.png"), full_page=True)


def test_annotator_is_refused_the_operations_page(page, live_server, annotator):
    _log_in(page, live_server.url, annotator.username)
    assert page.locator("nav a").all_inner_texts() == []  # no Prompts, Operations, Admin
    response = page.goto(f"{live_server.url}/ops/status/")
    assert response.status == 403


@pytest.mark.slow
def test_staff_launches_generation_and_reads_the_completions(
    page, live_server, staff_user, tmp_path, tiny_dir
):
    from training import services
    from training.models import Checkpoint
    from workers.models import Job

    Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    make_shapes(tmp_path, n=4, seed=6)
    prompts_import(path=tmp_path / "scienceqa.parquet", source_name="shapes-sqa", fmt="scienceqa")
    base = live_server.url
    _log_in(page, base, staff_user.username)

    page.click("nav >> text=Generate")
    page.select_option("select[name=source]", label="shapes-sqa")
    page.select_option("select[name=checkpoint]", label="tiny")
    page.fill("input[name=k]", "3")
    page.fill("input[name=max_new_tokens]", "12")
    page.wait_for_selector("[data-completions='12']")  # 4 prompts x K=3, via htmx
    page.screenshot(path=str(SHOTS / "generate.png"), full_page=True)
    page.click("text=Launch on the gpu queue")
    page.wait_for_url("**/ops/jobs/*/")
    job = Job.objects.get()
    assert job.status == Job.Status.QUEUED

    services.generation_run(job_id=job.pk)  # what the gpu worker does
    page.wait_for_selector("[data-status=succeeded]", timeout=15_000)  # the page polls
    assert "completions_per_s" in page.inner_text("#job-progress")

    page.click("nav >> text=Prompts")
    page.locator(".tile").first.click()
    assert page.locator(".checkpoint-group h3").inner_text().startswith("tiny")
    assert page.locator(".completion").count() == 3
    page.screenshot(path=str(SHOTS / "prompt-completions.png"), full_page=True)
