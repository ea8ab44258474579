"""The loop end to end (issue 8): tiny model -> shapes -> generate -> oracle judge -> curate
-> SFT -> generate -> judge -> DPO -> evaluate -> compare, then the comparison and the DPO
run's page in Chromium (screenshots in var/screenshots)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from tests.test_browser import SHOTS, _log_in
from tests.test_browser import page as page
from training.models import EvaluationRun
from training.services.loop import run_loop

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_the_loop_end_to_end_and_its_comparison_in_a_browser(
    settings,
    tmp_path,
    live_server,
    page,
    staff_user,
):
    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    settings.MEDIA_ROOT = tmp_path / "media"
    lines: list[str] = []
    report = run_loop(log=lines.append)

    names = [name for name, _, _ in report.stages]
    assert names[0] == "build the tiny model" and names[-1] == "evaluate base, SFT, DPO"
    assert {"train SFT", "train DPO"} <= set(names)
    sqa = report.accuracy["scienceqa"]
    # The base has random weights: it never answers in a form that parses.
    assert sqa["sft"] >= sqa["base"] + 0.20, sqa
    assert sqa["dpo"] is not None  # reported against SFT; its sign is a finding
    assert set(report.accuracy["pope"]) == {"base", "sft", "dpo"}
    sft, dpo = report.checkpoints["sft"], report.checkpoints["dpo"]
    assert dpo.parent == sft and sft.parent == report.checkpoints["base"]
    assert EvaluationRun.objects.filter(checkpoint__in=report.checkpoints.values()).count() == 6
    print("\n".join(f"{n:<40} {s:6.1f} s  {d}" for n, s, d in report.stages))  # in the CI log
    print(f"total {report.total_s:.1f} s; accuracy {report.accuracy}")

    base = live_server.url
    _log_in(page, base, staff_user.username)
    ids = "&".join(f"checkpoints={c.pk}" for c in report.checkpoints.values())
    page.goto(f"{base}{reverse('training:compare')}?{ids}&tasks=scienceqa&tasks=pope")
    table = page.locator(".compare-table[data-task=scienceqa]")
    sft_row = table.locator(f"tr[data-checkpoint='{sft.name}']")
    assert "[" in sft_row.locator("td.diff").inner_text()  # a difference with its interval
    assert page.locator("svg").count() >= 3
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

    page.goto(f"{base}{reverse('training:training', args=[dpo.training_job.pk])}")
    assert page.locator("[data-status=succeeded]").count() == 1
    assert page.locator("polyline.series").count() >= 4
    page.screenshot(path=str(SHOTS / "training-dpo.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_the_demo_command_refuses_too_few_images():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="at least 20"):
        call_command("run_loop", "--images", "5")
