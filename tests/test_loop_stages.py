"""The loop's stages one at a time (issue 13.5): each takes explicit values and returns a record
of what it made; one timer logs and times them; the demo command prints the report. The
whole loop runs in tests/test_loop.py."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from tests import factories
from training.models import TrainingJob
from training.services.loop import (
    Evaluated,
    LoopConfig,
    LoopError,
    LoopReport,
    Timer,
    curate_dpo,
    import_shapes,
    make_shapes_data,
    train_sft,
)


def test_one_timer_logs_each_stage_and_records_its_name_seconds_and_detail():
    lines: list[str] = []
    stage = Timer(lines.append)
    made = stage("evaluate", lambda accuracy: Evaluated(accuracy=accuracy), {"pope": {"a": 0.5}})

    assert made == Evaluated(accuracy={"pope": {"a": 0.5}})
    [(name, seconds, detail)] = stage.stages
    assert (name, detail) == ("evaluate", "pope accuracy a 50.0%")
    assert seconds >= 0
    assert lines[0] == "evaluate ..."
    assert re.fullmatch(r"evaluate: pope accuracy a 50\.0% \(\d+\.\d s\)", lines[1]), lines


@pytest.mark.django_db
def test_stages_pass_what_they_made_to_the_next_and_an_empty_set_stops_training(tmp_path):
    config = LoopConfig(tag="loop-test", root=tmp_path / "loop", images=20, seed=1, k=2)
    shapes = make_shapes_data(config)
    assert shapes.data_dir == tmp_path / "loop" / "shapes"
    assert shapes.counts["scienceqa"] == 20

    data = import_shapes(config, shapes)
    assert data.prompts == 20 == data.source.prompts.count()
    assert data.source.name == "loop-test-shapes"
    assert data.selection == {"source_id": data.source.pk, "split": "train"}

    base = factories.checkpoint()
    pairs = curate_dpo(config, data, "dpo-base", base)  # nothing generated, nothing rated
    assert pairs.key == "dpo-base" and pairs.version is None
    assert pairs.detail.startswith("no rows: the recipe makes no rows")

    with pytest.raises(LoopError, match=r"train sft: the dpo-base set has no rows \(the recipe"):
        train_sft(config, pairs, base)
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_the_demo_command_prints_stage_times_accuracies_and_the_comparison_url(monkeypatch):
    base, sft = factories.checkpoint("base"), factories.checkpoint("sft")
    report = LoopReport(
        tag="loop-x",
        stages=[("build the tiny model", 4.3, "..."), ("evaluate base, SFT, DPO", 50.0, "...")],
        checkpoints={"base": base, "sft": sft},
        versions={"sft": None},
        accuracy={"scienceqa": {"base": 0.0, "sft": 0.4}, "pope": {"base": None, "sft": 0.5}},
    )
    asked = {}

    def fake_run_loop(**options):
        asked.update(options)
        return report

    monkeypatch.setattr("training.management.commands.run_loop.run_loop", fake_run_loop)
    out = StringIO()
    call_command("run_loop", "--images", "40", "--seed", "3", "--k", "2", stdout=out)

    assert {k: asked[k] for k in ("images", "seed", "k")} == {"images": 40, "seed": 3, "k": 2}
    url = f"{reverse('training:compare')}?checkpoints={base.pk}&checkpoints={sft.pk}"
    url += "&tasks=scienceqa&tasks=pope"
    assert report.compare_url == url
    printed = out.getvalue().splitlines()
    assert printed[-6:] == [
        "  build the tiny model         4.3 s",
        "  evaluate base, SFT, DPO     50.0 s",
        "  total                       54.3 s",
        "  held-out scienceqa accuracy: base 0.0%, sft 40.0%",
        "  held-out pope accuracy: base n/a, sft 50.0%",
        f"compare them at {url}",
    ]
