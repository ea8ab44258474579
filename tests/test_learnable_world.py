"""The shapes world the tiny model can learn (issue 14 point 0), and the instruction set with
a planted prior that the start learns from (point 1). Pure core: no Django, no model."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from datasets_app.core import shapes
from datasets_app.core.shapes import (
    CLASSIC,
    INSTRUCT,
    LEARNABLE,
    PARTNERS,
    Prior,
    Scene,
    World,
    make_instruct,
    make_shapes,
    oracle_answer,
    question_kind,
    scene_part,
)
from training.core.generation.templates import SHORT_ANSWER_SUFFIX


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    out = tmp_path_factory.mktemp("learnable")
    counts = make_shapes(out, n=120, seed=4, world=LEARNABLE)
    sqa = pq.read_table(out / "scienceqa.parquet").to_pylist()
    pope = pq.read_table(out / "pope.parquet").to_pylist()
    return counts, sqa, pope


def test_pope_asks_about_colours_half_yes_and_agrees_with_the_oracle(learnable):
    counts, _, pope = learnable
    assert counts["pope"] == 6 * 120 and counts["pope_yes"] == 3 * 120
    for row in pope:
        assert row["question"].endswith(" shape in the image?"), row["question"]
        assert oracle_answer(row["scene"], row["question"]) == row["answer"]
    by_category = Counter((r["category"], r["answer"]) for r in pope)
    assert set(by_category.values()) == {120}


def test_adversarial_negatives_are_the_absent_colour_seen_most_with_the_present_ones(learnable):
    _, _, pope = learnable
    scenes = {r["image_source"]: Scene.from_dict(json.loads(r["scene"])) for r in pope}
    stats = shapes.ColourStats.of(scenes.values())
    partner_hits = 0
    negatives = [r for r in pope if r["category"] == "adversarial" and r["answer"] == "no"]
    for row in negatives:
        scene = scenes[row["image_source"]]
        present = {s.colour for s in scene.shapes}
        asked = row["question"].split()[3]
        absent = [c for c in shapes.COLOURS if c not in present]
        together = {c: sum(stats.together[(p, c)] for p in present) for c in absent}
        assert together[asked] == max(together.values())
        partner_hits += any(PARTNERS[p] == asked for p in present)
    # Partners are drawn together half the time, so they are what adversarial asks about.
    assert partner_hits / len(negatives) > 0.6


def test_scenes_have_at_most_three_shapes_and_partner_colours_cooccur(learnable):
    _, sqa, _ = learnable
    scenes = [Scene.from_dict(json.loads(r["scene"])) for r in sqa]
    assert max(len(s.shapes) for s in scenes) == 3
    multi = [s for s in scenes if len(s.shapes) > 1]
    with_partner = sum(
        any(PARTNERS[a.colour] == b.colour for a in s.shapes for b in s.shapes) for s in multi
    )
    assert with_partner / len(multi) > 0.5
    assert {r["subject"] for r in sqa} == {"natural science", "language science"}  # no position


def test_the_instruction_set_and_the_heldout_world_never_share_an_image(tmp_path):
    make_instruct(tmp_path / "instruct.parquet", n=300, seed=0, prior=Prior())
    make_shapes(tmp_path / "heldout", n=300, seed=0, world=LEARNABLE)
    instruct = {r["scene"] for r in pq.read_table(tmp_path / "instruct.parquet").to_pylist()}
    heldout = {
        r["scene"] for r in pq.read_table(tmp_path / "heldout/scienceqa.parquet").to_pylist()
    }
    assert {scene_part(Scene.from_dict(json.loads(s))) for s in instruct} == {INSTRUCT.part}
    assert {scene_part(Scene.from_dict(json.loads(s))) for s in heldout} == {LEARNABLE.part}
    assert not instruct & heldout


def test_the_prior_writes_only_the_answers_it_says_and_the_oracle_still_knows_the_truth(tmp_path):
    counts = make_instruct(tmp_path / "i.parquet", n=1000, seed=3, prior=Prior(0.7, 0.25))
    rows = pq.read_table(tmp_path / "i.parquet").to_pylist()
    assert counts["kinds"] == dict(Counter(r["kind"] for r in rows))
    assert set(counts["kinds"]) == {"exist", "count", "colour", "choice", "describe"}
    prior_yes = total_near_misses = 0
    for row in rows:
        question = row["question"]
        if row["kind"] in ("exist", "count", "colour"):
            assert question.endswith(SHORT_ANSWER_SUFFIX)
            truth = oracle_answer(row["scene"], question.removesuffix(SHORT_ANSWER_SUFFIX))
            if not row["planted"]:
                assert row["reference_answer"] == truth
        if row["kind"] == "exist":
            scene = Scene.from_dict(json.loads(row["scene"]))
            colour = question.split()[3]
            present = {s.colour for s in scene.shapes}
            if colour not in present and PARTNERS[colour] in present:
                total_near_misses += 1
                prior_yes += row["planted"] == "prior"
            elif row["planted"] == "prior":
                pytest.fail(f"the prior changed an answer it does not cover: {row}")
        if row["kind"] == "choice":
            assert row["choices"] and 0 <= row["answer_index"] < len(row["choices"])
        if row["kind"] == "describe":
            assert row["reference_answer"] == shapes.describe(
                Scene.from_dict(json.loads(row["scene"]))
            )
    assert 0.55 < prior_yes / total_near_misses < 0.85  # 70% planted
    flipped = sum(r["planted"] == "disagreement" for r in rows if r["kind"] == "exist")
    assert 0.15 < flipped / counts["kinds"]["exist"] < 0.35


def test_no_prior_means_every_answer_is_the_truth_and_the_pool_is_stored_bare(tmp_path):
    counts = shapes.make_loop_data(tmp_path, n=50, pool=200, seed=1, multiple_choice=True)
    assert counts["scienceqa"] == 50 and counts["pool"]["rows"] == 200
    exclude = {r["scene"] for r in pq.read_table(tmp_path / "scienceqa.parquet").to_pylist()}
    rows = pq.read_table(tmp_path / "pool.parquet").to_pylist()
    assert {r["kind"] for r in rows} == {"exist", "count", "colour", "choice"}
    for row in rows:
        truth = oracle_answer(row["scene"], row["question"])
        if row["kind"] == "choice":
            assert row["subject"] == shapes.MULTIPLE_CHOICE
            assert row["choices"][row["answer_index"]] == truth
        else:
            assert row["subject"] == shapes.SHORT_ANSWER
            assert truth == row["reference_answer"]
        assert row["scene"] not in exclude and not row["planted"]


def test_question_kinds_and_the_classic_world_is_unchanged():
    assert question_kind("How many shapes are in the image?" + SHORT_ANSWER_SUFFIX) == "count"
    assert question_kind("What colour is the square?") == "colour"
    assert question_kind("Is there a red shape in the image?") == "existence"
    assert question_kind("Is there a red circle in the image?") == "existence"
    assert question_kind("Which shape is nearest the top?") == "position"
    assert question_kind("Describe the image.") == "other"
    assert World() == CLASSIC and CLASSIC.pope_objects == "shape" and CLASSIC.part is None
    with pytest.raises(ValueError, match="pope_objects"):
        World(pope_objects="kind")
    with pytest.raises(ValueError, match="disagreement"):
        Prior(disagreement=0.7)
