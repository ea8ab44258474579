"""The loop from the instruction-tuned start (issue 14 points 1-4 and 6), end to end: the
start is built through the project's own import, curation and SFT recipe (cached for the
session), DPO / rejection-sampling SFT / SteerLM and a second DPO round train on its rated
samples, and DPO must beat the start on the headline task with a 95% interval above 0. Then
the run's record page and the comparison page in Chromium (screenshots in var/screenshots).

Sizes are fixed with seeds and chosen with margin: measured on this machine the start scores
0.64 on POPE and DPO +0.22 [+0.19, +0.26] (eval 100 images, pool 1,200)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.test_browser import SHOTS, _log_in
from tests.test_browser import page as page
from training.models import Checkpoint, EvaluationRun, LoopRun
from training.services.loop import ROLES, LoopConfig, run_loop
from training.services.start import START_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_dpo_from_the_start_beats_it_on_pope_and_the_pages_show_the_gain(
    settings, tmp_path, start_cache, live_server, page, staff_user
):
    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    settings.START_CACHE_DIR = str(start_cache)
    lines: list[str] = []
    config = LoopConfig.new(eval_images=100, pool_images=1000, rounds=2, sft_steps=150)
    report = run_loop(config=config, log=lines.append)
    print("\n".join(f"{n:<45} {s:6.1f} s  {d}" for n, s, d in report.stages))  # in the CI log
    result = report.result
    print(result)

    assert (
        tuple(result) == ("wall_s", "headline", "checkpoints", "deltas")
        and result["headline"] == "pope"
    )
    assert tuple(result["checkpoints"]) == ROLES and set(result["deltas"]) == set(ROLES[1:])
    start = result["checkpoints"]["start"]
    assert start["name"] == START_NAME
    assert 0.35 <= start["pope"]["accuracy"] <= 0.80, start  # imperfect on purpose
    assert start["pope"]["parse_failures"] < 0.05 * start["pope"]["n"]
    assert start["pope"]["n"] == 600 and start["scienceqa"]["n"] == 100
    dpo = result["deltas"]["dpo"]["pope"]
    assert dpo["delta"] >= 0.05 and dpo["ci95"][0] > 0, dpo
    for role in ROLES[1:]:  # reported whatever their sign
        for task in ("scienceqa", "pope"):
            low, high = result["deltas"][role][task]["ci95"]
            assert low <= result["deltas"][role][task]["delta"] <= high
    distinct = next(d for n, _, d in report.stages if n.startswith("generate K=4 from the start"))
    assert int(distinct.split("; ")[1].split("%")[0]) > 50, distinct  # most prompts get pairs

    record = LoopRun.objects.get()
    assert record.status == LoopRun.Status.SUCCEEDED and record.result == result
    assert set(record.breakdown["start"]["pope"]) == {"random", "popular", "adversarial"}
    assert record.logps["dpo"] and record.logps["dpo_round2"]  # logps/chosen over training
    dpo_checkpoint = report.checkpoints["dpo"]
    assert report.checkpoints["dpo_round2"].parent == dpo_checkpoint
    assert dpo_checkpoint.parent == Checkpoint.objects.get(name=START_NAME)
    assert EvaluationRun.objects.filter(checkpoint__in=report.checkpoints.values()).count() == 10
    steered = EvaluationRun.objects.get(checkpoint=report.checkpoints["steerlm"], task="pope")
    assert steered.params["steer"].startswith("helpfulness:4,correctness:4")

    base = live_server.url
    _log_in(page, base, staff_user.username)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{base}{reverse('training:loop', args=[record.pk])}")
    assert "paired bootstrap" in page.content()
    assert page.locator("svg").count() >= 2
    page.screenshot(path=str(SHOTS / "loop-record.png"), full_page=True)

    page.goto(f"{base}{report.compare_url}")
    table = page.locator(".compare-table[data-task=pope]")
    row = table.locator(f"tr[data-checkpoint='{dpo_checkpoint.name}']")
    shown = row.locator("td.diff").inner_text()
    gain, interval = shown.split("[", 1)  # the gain with its interval: "0.221 [0.185, 0.260]"
    assert float(gain) >= 0.05 and float(interval.split(",")[0]) > 0, shown
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
