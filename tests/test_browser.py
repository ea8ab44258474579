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
