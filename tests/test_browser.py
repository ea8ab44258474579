"""What a person does in Chromium: log in, browse prompts, open the admin, run a self-test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datasets_app.core.shapes import make_shapes
from datasets_app.services.imports import prompts_import

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
    assert page.locator("nav a").all_inner_texts() == ["Annotate"]  # no Prompts, Ops, Admin
    response = page.goto(f"{live_server.url}/ops/status/")
    assert response.status == 403


@pytest.mark.slow
def test_staff_launches_generation_and_reads_the_completions(
    page, live_server, staff_user, tmp_path, tiny_dir
):
    from training.models import Checkpoint
    from training.services import generation
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

    generation.generation_run(job_id=job.pk)  # what the gpu worker does
    page.wait_for_selector("[data-status=succeeded]", timeout=15_000)  # the page polls
    assert "completions_per_s" in page.inner_text("#job-progress")

    page.click("nav >> text=Prompts")
    page.locator(".tile").first.click()
    assert page.locator(".checkpoint-group h3").inner_text().startswith("tiny")
    assert page.locator(".completion").count() == 3
    page.screenshot(path=str(SHOTS / "prompt-completions.png"), full_page=True)


def _rate_with_keys(page, scores_by_col: list[list[int]], best: int, worst: int) -> None:
    """Fill an item with the keyboard only: digits walk down a column, and l from its end
    lands on the next response's first attribute."""
    for col, scores in enumerate(scores_by_col):
        if col:
            page.keyboard.press("l")
        for score in scores:
            page.keyboard.press(str(score))
    for _ in range(len(scores_by_col) - 1 - worst):
        page.keyboard.press("h")
    page.keyboard.press("w")
    for _ in range(abs(worst - best)):
        page.keyboard.press("h" if best < worst else "l")
    page.keyboard.press("b")


def test_an_annotator_rates_three_items_by_keyboard_and_edits_one(
    page, live_server, annotator, make_user, shapes_source
):
    from annotation.models import ATTRIBUTES, Assignment, Completion, PairPick, Rating
    from annotation.services import campaigns
    from training.models import Checkpoint

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    prompts = list(shapes_source.prompts.order_by("id")[:4])
    for p in prompts:
        for i in range(3):
            Completion.objects.create(
                prompt=p, checkpoint=checkpoint, sample_index=i, text=f"**Answer {i}** for {p.pk}"
            )
    hostile = Completion.objects.filter(prompt=prompts[0]).first()
    hostile.text = "<script>window.hacked=1</script><img src=x onerror=window.hacked=2>"
    hostile.save()
    campaign = campaigns.campaign_create(
        name="keyboard", selection={"prompt_ids": [p.pk for p in prompts]}, overlap=1
    )
    other = make_user("zoe", role="annotator")
    theirs = campaigns.assignment_next(campaign=campaign, user=other)

    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    base = live_server.url
    _log_in(page, base, annotator.username)
    page.click("nav >> text=Annotate")
    page.click("text=Start")
    page.wait_for_selector("#annotate")
    assert page.evaluate("window.hacked") is None and not dialogs
    plans = [
        ([[4, 4, 3, 2, 1], [1, 0, 3, 2, 2], [2, 2, 2, 2, 2]], 0, 1),
        ([[3, 3, 3, 3, 3], [2, 2, 2, 2, 2], [1, 1, 1, 1, 1]], 0, 2),
        ([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 2, 2, 2, 2]], 1, 0),
    ]
    rated = []
    for n, (scores, best, worst) in enumerate(plans):
        url = page.url
        assignment = Assignment.objects.get(pk=int(url.rstrip("/").split("/")[-1]))
        rated.append((assignment, scores, best, worst))
        if n == 0:
            page.keyboard.press("?")
            page.wait_for_selector("[data-overlay=help]:not([hidden])")
            page.screenshot(path=str(SHOTS / "annotate-help.png"))
            page.keyboard.press("Escape")
        _rate_with_keys(page, scores, best, worst)
        if n == 0:
            page.screenshot(path=str(SHOTS / "annotate.png"), full_page=True)
        page.keyboard.press("Enter")
        page.wait_for_url(lambda u, before=url: u != before)
        if n == 1:
            # Undo: back to the second item, change its first score, submit again.
            page.keyboard.press("u")
            page.wait_for_url(f"**/items/{assignment.pk}/")
            page.wait_for_selector("#annotate")
            page.keyboard.press("4")
            page.keyboard.press("Enter")
            page.wait_for_url(lambda u, edited=assignment.pk: f"/items/{edited}/" not in u)

    ratings = Rating.objects.filter(user=annotator)
    assert ratings.count() == 9
    for assignment, scores, best, worst in rated:
        ids = assignment.item.completion_ids
        for col, cid in enumerate(ids):
            expected = list(scores[col])
            if assignment == rated[1][0] and col == 0:
                expected[0] = 4  # the edit
            got = ratings.get(completion_id=cid)
            assert [getattr(got, a) for a in ATTRIBUTES] == expected
        pick = PairPick.objects.get(prompt=assignment.item.prompt, annotator=annotator)
        assert (pick.chosen_id, pick.rejected_id) == (ids[best], ids[worst])
    assert PairPick.objects.filter(annotator=annotator).count() == 3

    # Someone else's item and the admin stay closed.
    assert page.goto(f"{base}/annotate/items/{theirs.pk}/").status == 404
    assert page.goto(f"{base}/admin/").status == 404


def test_nothing_typed_is_lost_when_the_server_is_unreachable(
    page, live_server, annotator, shapes_source
):
    from annotation.models import Completion, Rating
    from annotation.services import campaigns
    from training.models import Checkpoint

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    prompt = shapes_source.prompts.first()
    for i in range(2):
        Completion.objects.create(
            prompt=prompt, checkpoint=checkpoint, sample_index=i, text=f"A{i}"
        )
    campaign = campaigns.campaign_create(
        name="offline", selection={"prompt_ids": [prompt.pk]}, overlap=1
    )
    base = live_server.url
    _log_in(page, base, annotator.username)
    page.goto(f"{base}/annotate/campaigns/{campaign.pk}/next/")
    page.wait_for_selector("#annotate")
    item_url = page.url
    page.route("**/submit/", lambda route: route.abort())  # the network fails
    _rate_with_keys(page, [[1, 2, 3, 4, 0], [0, 1, 2, 3, 4]], 0, 1)
    page.keyboard.press("Enter")
    page.wait_for_selector("#save-status[data-kind=retrying]")
    assert "retrying" in page.inner_text("#save-status") and Rating.objects.count() == 0

    page.reload()  # what was typed survives a reload
    assert "Restored" in page.inner_text("#save-status")
    page.unroute("**/submit/")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda u: u != item_url)
    assert Rating.objects.filter(user=annotator).count() == 2


def test_the_evaluation_page_shows_the_results_when_its_job_ends(
    page, live_server, staff_user, tmp_path
):
    from tests.test_evaluation_live import finish_evaluation, queued_evaluation

    run = queued_evaluation(tmp_path)
    base = live_server.url
    SHOTS.mkdir(parents=True, exist_ok=True)
    _log_in(page, base, staff_user.username)
    page.goto(f"{base}/train/evaluations/{run.pk}/")
    before = page.inner_text("main")
    assert "Queued" in before and "No metrics yet" in before and "0 items" in before

    finish_evaluation(run)  # what the gpu worker writes; the page is not reloaded
    page.wait_for_function(
        "document.querySelector('main').innerText.includes('0.6667')", timeout=15_000
    )
    text = page.inner_text("main")
    assert "Succeeded" in text and "Queued" not in text and "accuracy" in text
    assert "3 items" in text and "No metrics yet" not in text
    assert page.locator("main pre.answer").count() == 3
    page.screenshot(path=str(SHOTS / "evaluation-finished.png"), full_page=True)


def test_the_cursor_follows_the_keys_across_responses(page, live_server, annotator, shapes_source):
    from annotation.models import ATTRIBUTES, Completion, Rating
    from annotation.services import campaigns
    from training.models import Checkpoint

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    prompts = list(shapes_source.prompts.order_by("id")[:2])
    for p in prompts:
        for i in range(3):
            Completion.objects.create(prompt=p, checkpoint=checkpoint, sample_index=i, text=f"A{i}")
    campaign = campaigns.campaign_create(
        name="cursor", selection={"prompt_ids": [p.pk for p in prompts]}, overlap=1
    )
    base = live_server.url
    SHOTS.mkdir(parents=True, exist_ok=True)
    _log_in(page, base, annotator.username)
    page.goto(f"{base}/annotate/campaigns/{campaign.pk}/next/")
    page.wait_for_selector("#annotate")

    def cursor() -> tuple[int, int]:
        return tuple(
            page.evaluate(
                "(() => { const r = document.querySelector('tr.cursor');"
                " return [Number(r.closest('.rate-card').dataset.col), Number(r.dataset.row)]; })()"
            )
        )

    for digit in "43210":
        page.keyboard.press(digit)
    assert cursor() == (0, 5)  # the five digits leave it on the pick row
    page.keyboard.press("l")
    assert cursor() == (1, 0)  # the next response's helpfulness
    for digit in "01234":
        page.keyboard.press(digit)
    page.keyboard.press("ArrowRight")
    assert cursor() == (2, 0)
    page.keyboard.press("2")
    page.keyboard.press("ArrowLeft")  # from an attribute row the row is kept
    assert cursor() == (1, 1)
    page.keyboard.press("ArrowLeft")
    assert cursor() == (0, 1)
    page.screenshot(path=str(SHOTS / "annotate-cursor.png"), full_page=True)
    chosen = page.evaluate(
        "Array.from(document.querySelectorAll('.rate-card')).map(card =>"
        " Array.from(card.querySelectorAll('tr[data-attribute]')).map(row => {"
        " const b = row.querySelector('.score.chosen'); return b ? Number(b.dataset.score) : null;"
        " }))"
    )
    assert chosen == [[4, 3, 2, 1, 0], [0, 1, 2, 3, 4], [2, None, None, None, None]]
    assert not Rating.objects.exists() and len(ATTRIBUTES) == 5
    assert page.inner_text("[data-progress]").startswith("Item 1 of 2")


def test_staff_reads_a_judges_reliability_card(page, live_server, staff_user, shapes_source):
    """Issue 18: a judge audited on the command line shows its card on its page."""
    from django.core.management import call_command

    from annotation.models import Completion, JudgeConfig
    from training.models import Checkpoint

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    Completion.objects.bulk_create(
        Completion(
            prompt=p, checkpoint=checkpoint, text=f"The answer is {'ABCD'[i]}.", sample_index=i
        )
        for p in shapes_source.prompts.all()
        for i in range(len(p.choices))
    )
    call_command("judge", "--judge", "oracle", "--source", "sqa")
    call_command(
        "judge_audit", "--judge", "oracle", "--source", "sqa", "--position", "--repeats", "2"
    )
    judge = JudgeConfig.objects.get(provider="oracle")
    base = live_server.url
    _log_in(page, base, staff_user.username)
    page.click("nav >> text=Judges")
    page.click(f"text={judge.name}")
    card = page.locator("section.reliability")
    assert "0.000" in card.locator('[data-metric="position_flip_rate"]').inner_text()
    assert "1.000" in card.locator('[data-metric="truth"]').inner_text()
    assert "correctness" in card.locator("table.audit").inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "judge_card.png"), full_page=True)
