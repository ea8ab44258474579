"""The record of a `run_loop` run (issue 14 point 4): the service refuses a malformed result
and saves nothing; the page shows the headline deltas with their intervals, a row per role,
a chart with whiskers per task, the logps curves, the stages; the list shows every run."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlparse

import pytest
from django.urls import reverse

from training.core.loop_results import accuracy_interval
from training.models import Checkpoint, LoopRun
from training.services import loop_runs

SVG = "{http://www.w3.org/2000/svg}"
ROLES = ("start", "dpo", "rs", "steerlm", "dpo_round2")


def _result() -> dict:
    def sqa(a):
        return {"accuracy": a, "n": 60, "parse_failures": 2}

    def pope(a):
        return {"accuracy": a, "f1": a - 0.01, "n": 90, "parse_failures": 0}

    accuracy = {"start": 0.40, "dpo": 0.52, "rs": 0.45, "steerlm": 0.43, "dpo_round2": 0.55}
    return {
        "wall_s": 412.3,
        "headline": "pope",
        "checkpoints": {
            role: {"name": f"loop-t-{role}", "scienceqa": sqa(a - 0.1), "pope": pope(a)}
            for role, a in accuracy.items()
        },
        "deltas": {
            "dpo": {
                "scienceqa": {"delta": 0.05, "ci95": [-0.01, 0.11]},
                "pope": {"delta": 0.123, "ci95": [0.081, 0.16]},
            },
            "rs": {
                "scienceqa": {"delta": 0.0, "ci95": [-0.05, 0.05]},
                "pope": {"delta": 0.05, "ci95": [0.01, 0.09]},
            },
            "steerlm": {"scienceqa": None, "pope": {"delta": None, "ci95": None}},
            "dpo_round2": {
                "scienceqa": {"delta": 0.1, "ci95": [0.04, 0.16]},
                "pope": {"delta": 0.15, "ci95": [0.1, 0.2]},
            },
        },
    }


def _breakdown() -> dict:
    groups = {
        "pope": ("adversarial", "random", "popular"),  # any order in; POPE's order out
        "scienceqa": ("count", "colour", "position"),
    }
    return {
        role: {
            task: {g: {"accuracy": 0.5, "n": 30, "ci95": [0.3, 0.7]} for g in names}
            for task, names in groups.items()
        }
        for role in ROLES
    }


@pytest.fixture
def record(db) -> dict:
    ids = {
        role: Checkpoint.objects.create(name=f"loop-t-{role}", model_path="x").pk for role in ROLES
    }
    return {
        "result": _result(),
        "breakdown": _breakdown(),
        "stages": [
            ("build the tiny model", 1.5, "random-weight tiny LLaVA"),
            ["train DPO", 30, "40 steps"],
        ],
        "logps": {"dpo": [[5, -40.0, -42.5], [10, -38.0, -45.0]], "rs": [[5, -50.0, None]]},
        "checkpoint_ids": ids,
        "versions": {"dpo": None},
    }


@pytest.fixture
def finished(record) -> LoopRun:
    run = loop_runs.loop_run_start(tag="loop-t", config={"images": 300, "seed": 0, "k": 4})
    return loop_runs.loop_run_finish(run, **record)


# --- the interval ---------------------------------------------------------------------------


def test_accuracy_interval_brackets_the_mean_and_depends_only_on_the_seed():
    scores = [1.0] * 30 + [0.0] * 70
    low, high = accuracy_interval(scores)
    assert low < 0.3 < high and high - low < 0.25
    assert accuracy_interval(scores) == [low, high]
    assert accuracy_interval(scores, seed=1) != [low, high]
    assert accuracy_interval([1.0, 1.0, 1.0]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least one score"):
        accuracy_interval([])


# --- the service ----------------------------------------------------------------------------


def test_a_finished_run_keeps_every_part_of_its_record(finished, record):
    finished.refresh_from_db()
    assert finished.status == LoopRun.Status.SUCCEEDED and finished.finished_at is not None
    assert finished.result == record["result"]
    assert finished.stages[0] == ["build the tiny model", 1.5, "random-weight tiny LLaVA"]
    assert finished.checkpoint_ids == record["checkpoint_ids"]


def _break(part: str, edit):
    def apply(record):
        edit(record[part])

    return apply


MALFORMED = {
    "a key missing": (_break("result", lambda r: r.pop("deltas")), "missing deltas"),
    "an unknown key": (_break("result", lambda r: r.update(delta={})), "unknown delta"),
    "an unknown role": (
        _break("result", lambda r: r["checkpoints"].update(ppo={"name": "p"})),
        "unknown ppo",
    ),
    "an unknown headline": (_break("result", lambda r: r.update(headline="mmmu")), "headline"),
    "a delta for start": (
        _break("result", lambda r: r["deltas"].update(start={})),
        r"result\.deltas: unknown start",
    ),
    "an accuracy in points": (
        _break("result", lambda r: r["checkpoints"]["dpo"]["pope"].update(accuracy=52.0)),
        r"checkpoints\.dpo\.pope\.accuracy must be between 0 and 1",
    ),
    "pope without F1": (
        _break("result", lambda r: r["checkpoints"]["rs"]["pope"].pop("f1")),
        r"checkpoints\.rs\.pope: missing f1",
    ),
    "an interval upside down": (
        _break("result", lambda r: r["deltas"]["dpo"]["pope"].update(ci95=[0.2, 0.1])),
        r"deltas\.dpo\.pope\.ci95",
    ),
    "a string for wall time": (_break("result", lambda r: r.update(wall_s="7m")), "wall_s"),
    "a breakdown cell without its shape": (
        _break("breakdown", lambda b: b["dpo"]["pope"].update(random=0.5)),
        r"breakdown\.dpo\.pope\.random must be an object",
    ),
    "a stage of two fields": (_break("stages", lambda s: s.append(["x", 1.0])), r"stages\[2\]"),
    "a logps point without a step": (
        _break("logps", lambda lp: lp["dpo"].append([-1.0, None])),
        r"logps\.dpo\[2\]",
    ),
    "a NaN accuracy": (
        _break("result", lambda r: r["checkpoints"]["dpo"]["pope"].update(accuracy=float("nan"))),
        "result is not JSON",
    ),
    "a checkpoint that does not exist": (
        _break("checkpoint_ids", lambda ids: ids.update(dpo=10**9)),
        "no Checkpoint with id",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_record_is_refused_and_nothing_is_saved(record, case):
    edit, message = MALFORMED[case]
    broken = copy.deepcopy(record)
    edit(broken)
    run = loop_runs.loop_run_start(tag="loop-t", config={})
    with pytest.raises(ValueError, match=message):
        loop_runs.loop_run_finish(run, **broken)
    run.refresh_from_db()
    assert run.status == LoopRun.Status.RUNNING
    assert (run.result, run.breakdown, run.stages, run.logps) == ({}, {}, [], {})
    assert run.finished_at is None


def test_a_run_ends_once(finished, record):
    with pytest.raises(ValueError, match="already ended"):
        loop_runs.loop_run_fail(finished, error="late", stages=[])
    with pytest.raises(ValueError, match="already ended"):
        loop_runs.loop_run_finish(finished, **record)
    finished.refresh_from_db()
    assert finished.status == LoopRun.Status.SUCCEEDED and finished.error == ""


def test_the_config_keeps_folders_as_text_and_refuses_other_objects(db, tmp_path):
    run = loop_runs.loop_run_start(tag="loop-t", config={"root": tmp_path, "images": 30})
    run.refresh_from_db()
    assert run.config == {"root": str(tmp_path), "images": 30}
    with pytest.raises(ValueError, match="config is not JSON"):
        loop_runs.loop_run_start(tag="loop-u", config={"when": object()})
    assert list(LoopRun.objects.values_list("tag", flat=True)) == ["loop-t"]


def test_a_run_needs_a_tag_and_a_failure_needs_its_error(db):
    with pytest.raises(ValueError, match="tag"):
        loop_runs.loop_run_start(tag="  ", config={})
    assert not LoopRun.objects.exists()
    run = loop_runs.loop_run_start(tag="loop-t", config={})
    with pytest.raises(ValueError, match="error"):
        loop_runs.loop_run_fail(run, error="", stages=[])
    run.refresh_from_db()
    assert run.status == LoopRun.Status.RUNNING


# --- the pages ------------------------------------------------------------------------------


def _charts(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, re.S)]


def test_the_page_shows_the_headline_every_role_and_a_chart_with_whiskers_per_task(
    finished, record, client, staff_user
):
    client.force_login(staff_user)
    page = client.get(reverse("training:loop", args=[finished.pk])).content.decode()

    assert "DPO vs start on pope: +12.3 points, 95% CI [+8.1, +16.0]" in page
    assert "DPO round 2 vs start on pope: +15.0 points, 95% CI [+10.0, +20.0]" in page
    assert "SteerLM vs start on pope: n/a" in page
    assert "paired bootstrap over the same held-out items" in page
    assert re.findall(r'data-role="(\w+)"', page) == list(ROLES)
    assert "+5.0 points, 95% CI [-1.0, +11.0]" in page  # DPO's scienceqa delta in its row
    assert "(90, 0)" in page and "52.0%" in page and "0.510" in page  # DPO's pope cells

    charts = _charts(page)
    by_kind = {c.get("aria-label"): c for c in charts if "question kind" in c.get("aria-label")}
    assert sorted(by_kind) == [
        "pope: accuracy per question kind (95% CI)",
        "scienceqa: accuracy per question kind (95% CI)",
    ]
    for chart in by_kind.values():
        whiskers = [e for e in chart.iter(f"{SVG}line") if e.get("class") == "whisker"]
        assert len(whiskers) == 3 * len(ROLES)  # every role in every question kind
    pope = by_kind["pope: accuracy per question kind (95% CI)"]
    labels = [e.text for e in pope.iter(f"{SVG}text") if e.get("class") == "group-label"]
    assert labels == ["random", "popular", "adversarial"]
    assert {c.get("aria-label") for c in charts} >= {
        "DPO: logps over training",
        "rejection-sampling SFT: logps over training",
    }

    (href,) = re.findall(r'href="([^"]*/compare/[^"]*)"', page)
    query = parse_qs(urlparse(href.replace("&amp;", "&")).query)
    ids = record["checkpoint_ids"]
    assert query == {"checkpoints": [str(ids[r]) for r in ROLES], "tasks": ["scienceqa", "pope"]}
    assert "build the tiny model" in page and "random-weight tiny LLaVA" in page
    assert "&quot;images&quot;: 300" in page  # the config


def test_a_failed_run_shows_its_error_and_the_stages_it_did(db, client, staff_user):
    run = loop_runs.loop_run_start(tag="loop-f", config={})
    loop_runs.loop_run_fail(
        run, error="train DPO: job #7 failed: CUDA out of memory", stages=[["import", 2.0, "10"]]
    )
    client.force_login(staff_user)
    page = client.get(reverse("training:loop", args=[run.pk])).content.decode()
    assert "train DPO: job #7 failed: CUDA out of memory" in page
    assert 'data-loop-status="failed"' in page and "<td>import</td>" in page
    assert "vs start on" not in page


def test_the_list_shows_every_run_newest_first_with_dpos_headline_delta(
    finished, client, staff_user
):
    failed = loop_runs.loop_run_start(tag="loop-later", config={})
    loop_runs.loop_run_fail(failed, error="boom", stages=[["import", 2.0, "10"]])
    client.force_login(staff_user)
    page = client.get(reverse("training:loops")).content.decode()
    assert re.findall(r'data-loop="(\d+)"', page) == [str(failed.pk), str(finished.pk)]
    assert "+12.3 points, 95% CI [+8.1, +16.0]" in page and "412.3 s" in page
    assert reverse("training:loop", args=[finished.pk]) in page
    assert f'<a href="{reverse("training:loops")}">Loops</a>' in page  # the nav link
