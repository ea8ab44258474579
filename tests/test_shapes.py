"""The synthetic shapes world: determinism, the HF/POPE layouts, and the oracle against the labels.

Pure tests: no database, no Django (they run with `-p no:django` and with the plugin).
"""

import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets_app.core import shapes
from datasets_app.core.shapes import Scene, oracle_answer

ROOT = Path(__file__).resolve().parents[1]
N, SEED = 60, 7
EXIST_RE = re.compile(r"Is there a (\w+) (\w+) in the image\?")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    counts = shapes.make_shapes(out, n=N, seed=SEED)
    sqa = pq.read_table(out / "scienceqa.parquet").to_pylist()
    pope = pq.read_table(out / "pope.parquet").to_pylist()
    return out, counts, sqa, pope


def test_same_seed_gives_identical_bytes_and_another_seed_differs(world, tmp_path):
    out, *_ = world
    shapes.make_shapes(tmp_path / "same", n=N, seed=SEED)
    shapes.make_shapes(tmp_path / "other", n=N, seed=SEED + 1)
    for name in ("scienceqa.parquet", "pope.parquet"):
        assert (tmp_path / "same" / name).read_bytes() == (out / name).read_bytes()
        assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes()


def test_counts(world):
    _, counts, sqa, pope = world
    assert counts["images"] == N
    assert counts["scienceqa"] == len(sqa) == N
    assert counts["pope"] == len(pope) == 6 * N
    assert counts["splits"] == {"train": 48, "validation": 6, "test": 6}
    assert counts["pope_yes"] == 3 * N


def test_columns_and_hf_metadata(world):
    out, *_ = world
    sqa = pq.read_schema(out / "scienceqa.parquet")
    assert sqa.names == [
        *("image", "question", "choices", "answer", "hint", "task", "grade", "subject"),
        *("topic", "category", "skill", "lecture", "solution", "split", "scene"),
    ]
    pope = pq.read_schema(out / "pope.parquet")
    assert pope.names == [
        *("question_id", "question", "answer", "image", "image_source", "category", "scene")
    ]
    features = json.loads(sqa.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert features["choices"]["_type"] in ("List", "Sequence")
    assert json.loads(pope.metadata[b"huggingface"])["info"]["features"]["image"]["_type"] == (
        "Image"
    )


def test_datasets_loads_both_files_and_decodes_images(world, tmp_path):
    import datasets
    from PIL import Image

    out, *_ = world
    sqa = datasets.load_dataset(
        "parquet",
        data_files=str(out / "scienceqa.parquet"),
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert len(sqa) == N
    row = sqa[0]
    assert isinstance(row["image"], Image.Image)
    assert row["image"].size == (64, 64)
    for row in sqa:
        assert isinstance(row["choices"], list)
        assert 2 <= len(row["choices"]) <= 4
        assert isinstance(row["answer"], int)
        assert 0 <= row["answer"] < len(row["choices"])
        assert row["task"] == "closed choice"
    pope = datasets.load_dataset(
        "parquet",
        data_files=str(out / "pope.parquet"),
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert len(pope) == 6 * N
    assert isinstance(pope[0]["image"], Image.Image)
    assert set(pope["answer"]) == {"yes", "no"}


def test_every_scienceqa_label_agrees_with_the_oracle(world):
    _, _, sqa, _ = world
    for row in sqa:
        truth = oracle_answer(json.loads(row["scene"]), row["question"])
        assert truth is not None, row["question"]
        assert row["choices"][row["answer"]] == truth
        assert row["choices"].count(truth) == 1
        assert row["solution"].endswith(f"The answer is {'ABCD'[row['answer']]}.")


def test_every_pope_label_agrees_with_the_oracle(world):
    _, _, _, pope = world
    for row in pope:
        assert oracle_answer(row["scene"], row["question"]) == row["answer"]


def test_pope_half_yes_overall_and_per_category(world):
    _, _, _, pope = world
    by_category = Counter((r["category"], r["answer"]) for r in pope)
    for category in ("random", "popular", "adversarial"):
        assert by_category[(category, "yes")] == by_category[(category, "no")] == N
    assert sum(r["answer"] == "yes" for r in pope) * 2 == len(pope)
    assert [r["question_id"] for r in pope] == list(range(len(pope)))


def test_all_subjects_and_question_types_present(world):
    _, _, sqa, _ = world
    assert {r["subject"] for r in sqa} == set(shapes.SUBJECTS)
    assert {r["split"] for r in sqa} == {"train", "validation", "test"}
    assert any(r["hint"] for r in sqa)
    assert any(not r["hint"] for r in sqa)


def _negatives(pope, category):
    for row in pope:
        if row["category"] == category and row["answer"] == "no":
            match = EXIST_RE.fullmatch(row["question"])
            assert match is not None, row["question"]
            yield Scene.from_dict(json.loads(row["scene"])), (match[1], match[2])


def test_adversarial_negatives_differ_from_a_present_shape_in_exactly_one_attribute(world):
    _, _, _, pope = world
    for scene, (colour, kind) in _negatives(pope, "adversarial"):
        present = {(s.colour, s.kind) for s in scene.shapes}
        assert (colour, kind) not in present
        assert any((colour == c) != (kind == k) for c, k in present)


def test_popular_negatives_are_among_the_most_frequent_absent_objects(world):
    _, _, sqa, pope = world
    ranking = shapes.object_ranking(Scene.from_dict(json.loads(r["scene"])) for r in sqa)
    for scene, obj in _negatives(pope, "popular"):
        present = {(s.colour, s.kind) for s in scene.shapes}
        assert obj in [o for o in ranking if o not in present][:3]


def test_scene_round_trips_and_drawing_matches_it():
    scene = shapes.random_scene(random.Random(3), min_shapes=4, max_shapes=4)
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
    image = shapes.draw_scene(scene)
    assert image.mode == "RGB"
    small = image.resize((32, 32))  # what the tiny model's vision tower sees
    for s in scene.shapes:
        assert image.getpixel((s.x, s.y)) == shapes.COLOURS[s.colour]
        pixel = small.getpixel((s.x // 2, s.y // 2))
        assert isinstance(pixel, tuple)
        assert max(abs(a - b) for a, b in zip(pixel, shapes.COLOURS[s.colour], strict=True)) < 40
    assert shapes.png_bytes(image) == shapes.png_bytes(shapes.draw_scene(scene))


def test_oracle_declines_what_it_cannot_answer():
    scene = Scene(
        64,
        64,
        "white",
        (shapes.Shape("circle", "red", 10, 10, 16), shapes.Shape("circle", "blue", 50, 50, 16)),
    )
    assert oracle_answer(scene, "What is the capital of France?") is None
    assert oracle_answer(scene, "What colour is the circle?") is None  # two circles
    assert oracle_answer(scene, "Is the green square on the left or the right?") is None
    assert oracle_answer(scene, "Which shape is furthest to the left?") == "red circle"
    assert oracle_answer(scene, "Is the blue circle at the top or the bottom?") == "bottom"
    assert oracle_answer(scene, "Is there a red circle in the image?") == "yes"
    assert oracle_answer(scene, "Is there a red square in the image?") == "no"
    with pytest.raises(ValueError, match="unknown shape"):
        Scene.from_dict(
            {**scene.to_dict(), "shapes": [{**scene.to_dict()["shapes"][0], "kind": "star"}]}
        )


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_oracle_agrees_with_generated_answers_for_any_seed(seed):
    rng = random.Random(seed)
    scene = shapes.random_scene(rng)
    assert 1 <= len(scene.shapes) <= 4
    for i, a in enumerate(scene.shapes):
        assert a.size // 2 <= a.x < 64 - a.size // 2 and a.size // 2 <= a.y < 64 - a.size // 2
        for b in scene.shapes[i + 1 :]:  # bounding squares do not touch
            reach = (a.size + b.size) // 2
            assert abs(a.x - b.x) > reach or abs(a.y - b.y) > reach
    for make in shapes.QUESTION_TYPES.values():
        q = make(scene, rng)
        if q is not None:
            assert 2 <= len(q.choices) <= 4
            assert len(set(q.choices)) == len(q.choices)
            assert q.choices[q.answer] == oracle_answer(scene.to_dict(), q.text)
    ranking = list(shapes.OBJECTS)
    for category in shapes.POPE_CATEGORIES:
        colour, kind = shapes.pope_negative(scene, category, rng, ranking)
        assert oracle_answer(scene, shapes.existence_text(colour, kind)) == "no"
    for s in scene.shapes:
        assert oracle_answer(scene, shapes.existence_text(s.colour, s.kind)) == "yes"


def test_shapes_core_does_not_import_django():
    code = "import sys, datasets_app.core.shapes; sys.exit('django' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
