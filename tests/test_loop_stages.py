"""The loop's stages one at a time: each takes explicit values and returns a record of what it
made; one timer logs and times them; the command prints the report and, with --json, ends
with the results line (issue 14 point 4). The whole loop runs in tests/test_loop.py."""

from __future__ import annotations

import json
import re
from io import StringIO

import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests import factories
from training.models import LoopRun, TrainingJob
from training.services import loop_runs
from training.services.loop import (
    LoopConfig,
    LoopError,
    LoopReport,
    Timer,
    Trained,
    curate_dpo,
    import_pool,
    make_world,
    train_dpo,
)


class _Made:
    detail = "pope accuracy a 50.0%"


def test_one_timer_logs_each_stage_and_records_its_name_seconds_and_detail():
    lines: list[str] = []
    stage = Timer(lines.append)
    made = stage("evaluate", lambda: _Made())

    assert isinstance(made, _Made)
    [(name, seconds, detail)] = stage.stages
    assert (name, detail) == ("evaluate", "pope accuracy a 50.0%")
    assert seconds >= 0
    assert lines[0] == "evaluate ..."
    assert re.fullmatch(r"evaluate: pope accuracy a 50\.0% \(\d+\.\d s\)", lines[1]), lines


@pytest.mark.django_db
def test_the_world_the_pool_and_an_empty_set_that_stops_training(tmp_path):
    config = LoopConfig(tag="loop-test", root=tmp_path / "loop", eval_images=20, pool_images=40)
    world = make_world(config)
    assert world.counts["scienceqa"] == 20 and world.counts["pope"] == 120
    held_out = {r["scene"] for r in pq.read_table(world.eval_dir / "scienceqa.parquet").to_pylist()}
    pool = pq.read_table(world.pool_path).to_pylist()
    assert len(pool) == 40 and not held_out & {r["scene"] for r in pool}

    data = import_pool(config, world)
    assert data.prompts == 40 == data.source.prompts.filter(split="train").count()
    assert data.selection == {"source_id": data.source.pk, "split": "train"}

    start = factories.checkpoint()
    pairs = curate_dpo(config, data, "dpo", start)  # nothing generated, nothing rated
    assert pairs.key == "dpo" and pairs.version is None
    assert pairs.detail.startswith("no rows: the recipe makes no rows")
    with pytest.raises(LoopError, match=r"train dpo: the dpo set has no rows \(the recipe"):
        train_dpo(config, pairs, start)
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rounds", "0"], "--rounds must be 1-5"),
        (["--eval-images", "5"], "--eval-images must be at least 10"),
        (["--k", "1"], "--k must be 2-16"),
    ],
)
@pytest.mark.django_db
def test_the_command_refuses_bad_sizes_before_doing_anything(flags, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("run_loop", *flags)
    assert not LoopRun.objects.exists()


CONTRACT = ("wall_s", "headline", "checkpoints", "deltas")  # issue 14 point 4, in order
RESULT = {
    "wall_s": 54.3,
    "headline": "pope",
    "checkpoints": {
        role: {
            "name": role,
            "scienceqa": {"accuracy": 0.5, "n": 100, "parse_failures": 0},
            "pope": {"accuracy": acc, "f1": acc, "n": 600, "parse_failures": 0},
        }
        for role, acc in (("start", 0.6), ("dpo", 0.8))
    },
    "deltas": {
        "dpo": {
            "scienceqa": {"delta": 0.0, "ci95": [-0.05, 0.05]},
            "pope": {"delta": 0.2, "ci95": [0.15, 0.25]},
        }
    },
}


@pytest.mark.django_db
def test_the_command_prints_the_stages_the_gain_and_ends_with_the_json_line(monkeypatch):
    start, dpo = factories.checkpoint("start"), factories.checkpoint("dpo")
    record = loop_runs.loop_run_start(tag="loop-x", config={})
    report = LoopReport(
        tag="loop-x",
        record=record,
        result=RESULT,
        stages=[("the start", 4.3, "..."), ("evaluate every checkpoint", 50.0, "...")],
        checkpoints={"start": start, "dpo": dpo},
    )
    asked = {}

    def fake_run_loop(*, config, log):
        asked["config"] = config
        return report

    monkeypatch.setattr("training.management.commands.run_loop.run_loop", fake_run_loop)
    out = StringIO()
    call_command(
        "run_loop", "--eval-images", "40", "--rounds", "1", "--k", "3", "--json", stdout=out
    )

    config = asked["config"]
    assert (config.eval_images, config.rounds, config.k) == (40, 1, 3)
    printed = out.getvalue().splitlines()
    assert json.loads(printed[-1]) == RESULT and tuple(json.loads(printed[-1])) == CONTRACT
    assert "  dpo vs start on pope: +20.0 points, 95% CI [+15.0, +25.0]" in printed
    assert f"the record: {reverse('training:loop', args=[record.pk])}" in printed
    url = f"{reverse('training:compare')}?checkpoints={start.pk}&checkpoints={dpo.pk}"
    assert f"compare them at {url}&tasks=scienceqa&tasks=pope" in printed

    out = StringIO()
    call_command("run_loop", stdout=out)  # without --json the last line is the URL
    assert out.getvalue().splitlines()[-1].startswith("compare them at ")


def test_a_trained_record_shows_how_the_chosen_likelihood_moved():
    trained = Trained(checkpoint=None, steps=300, logps=[[10, -0.64, -1.0], [300, -0.49, -2.1]])
    assert trained.detail == "300 steps; logps/chosen -0.640 -> -0.490"
