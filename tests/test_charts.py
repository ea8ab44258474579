"""One chart module: every SVG the pages show comes from `common.charts`, in one frame and
through one escaping rule (quotes included, so no name can open an attribute)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from common import charts

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
EVIL = 'x" onload="alert(1)\' <b>&'


def _every_chart(name: str) -> list[str]:
    return [
        charts.bars_svg([name, "b"], [1.0, 2.0], name),
        charts.histogram_svg({"edges": [0.0, 1.0, 2.0], "counts": [3, 4]}, name),
        charts.unit_bars_svg([name, "b"], [0.5, None], name),
        charts.heatmap_svg([name, "b"], [[1.0, None], [-0.5, 1.0]], name),
        charts.lines_svg({name: [(0, 1.0), (1, 2.0)], "eval": [(1, 1.5)]}, name),
        charts.lines_svg({}, name),
        charts.bars_svg([], [], name),
        charts.grouped_bars_svg(
            [name, "b"],
            [name, "c"],
            [[0.5, None], [0.7, 0.2]],
            [[(0.4, 0.6), None], [None, None]],
            name,
        ),
    ]


@pytest.mark.parametrize("index", range(8))
def test_every_chart_shares_one_frame_and_escapes_quotes(index):
    svg = _every_chart(EVIL)[index]
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("class") == "chart"
    assert root.get("aria-label") == EVIL and root.get("font-family")
    assert root.find(f"{SVG}title").text == EVIL
    for element in root.iter():
        assert not any(key.startswith("on") for key in element.attrib), element.attrib
    assert "<b>" not in svg and 'x" onload' not in svg


def test_a_series_name_stays_inside_its_attribute():
    root = ET.fromstring(charts.lines_svg({EVIL: [(0, 1.0), (2, 3.0)]}, "t"))
    (line,) = root.iter(f"{SVG}polyline")
    assert line.get("data-series") == EVIL and line.get("onload") is None


def test_no_module_but_the_chart_module_writes_svg():
    writers = [
        path.relative_to(ROOT).as_posix()
        for folder in ("annotation", "common", "config", "datasets_app", "training", "workers")
        for path in (ROOT / folder).rglob("*.py")
        if "<svg" in path.read_text(encoding="utf-8")
    ]
    templates = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "templates").rglob("*.html")
        if "<svg" in path.read_text(encoding="utf-8")
    ]
    assert writers == ["common/charts.py"] and templates == []


def test_a_missing_value_has_no_bar_and_never_reads_as_zero():
    svg = charts.bars_svg(["base", "sft", "dpo"], [0.4, None, 0.0], "scienceqa: accuracy")
    assert svg.count('<rect class="bar"') == 2  # the zero keeps its hairline, None has none
    values = [t.split(">", 1)[1].split("<", 1)[0] for t in svg.split('<text class="value"')[1:]]
    assert values == ["0.4", "n/a", "0"]


def test_a_chart_of_zeros_labels_its_axis_once():
    svg = charts.bars_svg(["a", "b"], [0.0, 0.0], "all zero")
    assert svg.count('text-anchor="end">0</text>') == 1


def _grouped_by_accuracy() -> ET.Element:
    svg = charts.grouped_bars_svg(
        ["random", "popular", "adversarial"],
        ["start", "DPO"],
        [[0.5, 0.4, None], [0.8, 0.0, 0.6]],
        [[(0.4, 0.6), (0.3, 0.5), None], [(0.7, 0.9), None, (0.5, 0.7)]],
        "pope: accuracy per question kind",
    )
    return ET.fromstring(svg)


def test_grouped_bars_draw_a_whisker_over_each_bar_that_has_an_interval():
    root = _grouped_by_accuracy()
    bars = [e for e in root.iter(f"{SVG}rect") if e.get("class") == "bar"]
    whiskers = [e for e in root.iter(f"{SVG}line") if e.get("class") == "whisker"]
    # Five values (the zero as a hairline), four intervals; None has neither.
    assert len(bars) == 5 and len(whiskers) == 4
    assert [b.get("data-group") for b in bars if b.get("data-series") == "DPO"] == [
        "random",
        "popular",
        "adversarial",
    ]
    for whisker in whiskers:  # screen y grows downwards: the low end is drawn below
        assert float(whisker.get("y1")) > float(whisker.get("y2"))
    first_bar, first_whisker = bars[0], whiskers[0]
    # start on random: 0.5 within [0.4, 0.6], the whisker centred on the bar.
    top = float(first_bar.get("y"))
    assert float(first_whisker.get("y2")) < top < float(first_whisker.get("y1"))
    centre = float(first_bar.get("x")) + float(first_bar.get("width")) / 2
    assert float(first_whisker.get("x1")) == pytest.approx(centre, abs=0.1)


def test_grouped_bars_show_a_missing_value_as_na_and_scale_to_the_highest_whisker():
    root = _grouped_by_accuracy()
    missing = [e.text for e in root.iter(f"{SVG}text") if e.get("class") == "missing"]
    assert missing == ["n/a"]
    assert any(e.text == "0.9" for e in root.iter(f"{SVG}text"))  # DPO's random whisker top
    legend = [e.text for e in root.iter(f"{SVG}text") if e.get("class") == "legend"]
    assert legend == ["■ start", "■ DPO"]


def test_grouped_bars_refuse_rows_that_do_not_match_the_groups():
    with pytest.raises(ValueError, match="one entry per group"):
        charts.grouped_bars_svg(["a", "b"], ["s"], [[0.5]], [[None]], "t")
