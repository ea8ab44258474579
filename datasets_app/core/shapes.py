"""The synthetic "shapes" world: images of coloured shapes with questions whose answers are known.

Pure core (no Django): the tiny LLaVA is trained and evaluated on it without a network, and the
rule-based oracle judge (`oracle_answer`) rates completions against the truth. `make_shapes`
writes the world as a ScienceQA-layout parquet (one multiple-choice question per image) and a
POPE-layout parquet (yes/no existence questions, exactly half "yes" in each category), both
loadable by `datasets` with the image column decoded as PIL images.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle")
# Saturated and far apart, so that the colours survive downscaling to the model's 32x32 view.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
OBJECTS = tuple((colour, kind) for colour in COLOURS for kind in KINDS)  # all 12 descriptions
POPE_CATEGORIES = ("random", "popular", "adversarial")
SUBJECTS = ("natural science", "social science", "language science")
LETTERS = "ABCD"

# Shapes are 16-22 px in a 64 px image, i.e. at least 8 px once downscaled to 32 px, and kept
# GAP px apart; position questions are asked only when the answer is clear by MIN_GAP px.
MIN_HALF, MAX_HALF = 8, 11
GAP = 4
MIN_GAP = 8


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    x: int  # centre, in pixels from the left
    y: int  # centre, in pixels from the top
    size: int  # side of the bounding square

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: str
    shapes: tuple[Shape, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shapes": [asdict(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        shapes = tuple(Shape(**s) for s in data["shapes"])
        for s in shapes:
            if s.kind not in KINDS or s.colour not in COLOURS:
                raise ValueError(f"unknown shape in scene: {s.colour} {s.kind}")
        return cls(int(data["width"]), int(data["height"]), str(data["background"]), shapes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def random_scene(
    rng: random.Random,
    *,
    width: int = 64,
    height: int = 64,
    min_shapes: int = 1,
    max_shapes: int = 4,
    background: str = "white",
) -> Scene:
    """1-4 non-overlapping shapes, each a distinct colour+kind, so "the red circle" names one."""
    objects = rng.sample(OBJECTS, rng.randint(min_shapes, max_shapes))
    while True:  # random placement can paint itself into a corner; start again (rare)
        placed: list[Shape] = []
        for colour, kind in objects:
            for _ in range(100):
                half = rng.randint(MIN_HALF, MAX_HALF)
                x = rng.randint(half + 2, width - half - 3)
                y = rng.randint(half + 2, height - half - 3)
                if all(_apart(x, y, half, p) for p in placed):
                    placed.append(Shape(kind, colour, x, y, 2 * half))
                    break
            else:
                break
        if len(placed) == len(objects):
            return Scene(width, height, background, tuple(placed))


def _apart(x: int, y: int, half: int, other: Shape) -> bool:
    reach = half + other.size // 2 + GAP
    return abs(x - other.x) >= reach or abs(y - other.y) >= reach


def draw_scene(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        h = s.size // 2
        box = (s.x - h, s.y - h, s.x + h, s.y + h)
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            draw.ellipse(box, fill=fill)
        elif s.kind == "square":
            draw.rectangle(box, fill=fill)
        else:  # triangle pointing up; its centroid region covers (x, y)
            draw.polygon([(s.x, s.y - h), (s.x + h, s.y + h), (s.x - h, s.y + h)], fill=fill)
    return image


def png_bytes(image: Image.Image) -> bytes:
    # PIL writes no timestamp chunk, so the same scene always gives the same bytes.
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- multiple-choice questions


@dataclass(frozen=True)
class Question:
    qtype: str  # "count" | "colour" | "position"
    text: str
    choices: list[str]
    answer: int  # index into choices
    solution: str


COUNT_TEXT = "How many shapes are in the image?"
EXTREMES = {  # question wording -> (axis, pick the largest?)
    "furthest to the left": ("x", False),
    "furthest to the right": ("x", True),
    "nearest the top": ("y", False),
    "nearest the bottom": ("y", True),
}
_NAME = rf"({'|'.join(COLOURS)}) ({'|'.join(KINDS)})"
_COLOUR_RE = re.compile(rf"What colour is the ({'|'.join(KINDS)})\?")
_EXTREME_RE = re.compile(rf"Which shape is ({'|'.join(EXTREMES)})\?")
_SIDE_RE = re.compile(rf"Is the {_NAME} on the left or the right\?")
_LEVEL_RE = re.compile(rf"Is the {_NAME} at the top or the bottom\?")
_EXIST_RE = re.compile(rf"Is there a {_NAME} in the image\?")


def _question(
    rng: random.Random, qtype: str, text: str, correct: str, others: list[str], fact: str
) -> Question:
    """Shuffle 2-4 choices (the correct one plus distractors) and letter the solution."""
    k = rng.randint(2, min(4, len(others) + 1))
    choices = [correct, *rng.sample(others, k - 1)]
    rng.shuffle(choices)
    answer = choices.index(correct)
    return Question(qtype, text, choices, answer, f"{fact} The answer is {LETTERS[answer]}.")


def count_question(scene: Scene, rng: random.Random) -> Question:
    n = len(scene.shapes)
    others = [str(i) for i in range(1, 6) if i != n]
    fact = "There is 1 shape in the image." if n == 1 else f"There are {n} shapes in the image."
    return _question(rng, "count", COUNT_TEXT, str(n), others, fact)


def colour_question(scene: Scene, rng: random.Random) -> Question | None:
    """Asked only about a kind that occurs once, so "the <kind>" names one shape."""
    counts = Counter(s.kind for s in scene.shapes)
    unique = [s for s in scene.shapes if counts[s.kind] == 1]
    if not unique:
        return None
    s = rng.choice(unique)
    others = [c for c in COLOURS if c != s.colour]
    text = f"What colour is the {s.kind}?"
    return _question(rng, "colour", text, s.colour, others, f"The {s.kind} is {s.colour}.")


def position_question(scene: Scene, rng: random.Random) -> Question | None:
    """Where a shape is; only questions whose answer is clear by MIN_GAP pixels are candidates."""
    # Candidates by family (extreme / left-right / top-bottom), so that the per-shape families
    # do not crowd out the per-scene one: (text, correct, others, fact).
    families: dict[str, list[tuple[str, str, list[str], str]]] = {"extreme": [], "x": [], "y": []}
    if len(scene.shapes) >= 2:
        for wording, (axis, largest) in EXTREMES.items():
            ranked = sorted(scene.shapes, key=lambda s: getattr(s, axis), reverse=largest)
            if abs(getattr(ranked[0], axis) - getattr(ranked[1], axis)) >= MIN_GAP:
                others = [s.name for s in ranked[1:]]
                fact = f"The {ranked[0].name} is {wording}."
                families["extreme"].append(
                    (f"Which shape is {wording}?", ranked[0].name, others, fact)
                )
    for s in scene.shapes:
        if abs(s.x - scene.width / 2) >= MIN_GAP:
            side, other = ("left", "right") if s.x < scene.width / 2 else ("right", "left")
            text = f"Is the {s.name} on the left or the right?"
            families["x"].append((text, side, [other], f"The {s.name} is on the {side}."))
        if abs(s.y - scene.height / 2) >= MIN_GAP:
            level, other = ("top", "bottom") if s.y < scene.height / 2 else ("bottom", "top")
            text = f"Is the {s.name} at the top or the bottom?"
            families["y"].append((text, level, [other], f"The {s.name} is at the {level}."))
    candidates = [family for family in families.values() if family]
    if not candidates:
        return None
    text, correct, others, fact = rng.choice(rng.choice(candidates))
    return _question(rng, "position", text, correct, others, fact)


QUESTION_TYPES = {"count": count_question, "colour": colour_question, "position": position_question}


# ---------------------------------------------------------------- POPE existence questions


def existence_text(colour: str, kind: str) -> str:
    return f"Is there a {colour} {kind} in the image?"


def pope_negative(
    scene: Scene, category: str, rng: random.Random, ranking: list[tuple[str, str]]
) -> tuple[str, str]:
    """An absent (colour, kind) chosen the POPE way for `category`.

    popular: one of the three most frequent objects of the whole set (`ranking`, most frequent
    first) that this image lacks. adversarial: a near miss, differing from a present shape in
    exactly one of colour or kind.
    """
    present = {(s.colour, s.kind) for s in scene.shapes}
    if category == "random":
        pool = [o for o in OBJECTS if o not in present]
    elif category == "popular":
        pool = [o for o in ranking if o not in present][:3]
    elif category == "adversarial":
        # (present kind, any colour) or (present colour, any kind), minus what is present
        recoloured = {(c, kind) for _, kind in present for c in COLOURS}
        reshaped = {(colour, k) for colour, _ in present for k in KINDS}
        pool = sorted((recoloured | reshaped) - present)  # never empty: at most 4 shapes
    else:
        raise ValueError(f"unknown POPE category {category!r}")
    return rng.choice(pool)


def object_ranking(scenes: Iterable[Scene]) -> list[tuple[str, str]]:
    """All objects, most frequent in `scenes` first (ties in OBJECTS order, for determinism)."""
    freq = Counter((s.colour, s.kind) for scene in scenes for s in scene.shapes)
    return sorted(OBJECTS, key=lambda o: (-freq[o], OBJECTS.index(o)))


# ---------------------------------------------------------------- the oracle


def oracle_answer(scene: Scene | Mapping[str, Any] | str, question: str) -> str | None:
    """The true answer to a question in one of this module's templates, else None.

    Multiple-choice questions get the text of the correct choice; existence questions get
    "yes"/"no". A question the scene cannot answer (a kind that is not unique, a shape that is
    absent, a tie) also gets None.
    """
    if isinstance(scene, str):  # the JSON `scene` column as stored
        scene = Scene.from_dict(json.loads(scene))
    elif not isinstance(scene, Scene):
        scene = Scene.from_dict(scene)
    q = question.strip()
    by_name = {s.name: s for s in scene.shapes}
    if q == COUNT_TEXT:
        return str(len(scene.shapes))
    if m := _COLOUR_RE.fullmatch(q):
        matches = [s for s in scene.shapes if s.kind == m[1]]
        return matches[0].colour if len(matches) == 1 else None
    if m := _EXTREME_RE.fullmatch(q):
        axis, largest = EXTREMES[m[1]]
        ranked = sorted(scene.shapes, key=lambda s: getattr(s, axis), reverse=largest)
        if not ranked or (len(ranked) > 1 and getattr(ranked[0], axis) == getattr(ranked[1], axis)):
            return None
        return ranked[0].name
    if m := _SIDE_RE.fullmatch(q):
        s = by_name.get(f"{m[1]} {m[2]}")
        if s is None or s.x * 2 == scene.width:
            return None
        return "left" if s.x * 2 < scene.width else "right"
    if m := _LEVEL_RE.fullmatch(q):
        s = by_name.get(f"{m[1]} {m[2]}")
        if s is None or s.y * 2 == scene.height:
            return None
        return "top" if s.y * 2 < scene.height else "bottom"
    if m := _EXIST_RE.fullmatch(q):
        return "yes" if f"{m[1]} {m[2]}" in by_name else "no"
    return None


# ---------------------------------------------------------------- rows and parquet files

# Each question type stands for one ScienceQA subject, so per-subject accuracy reads as
# per-question-type accuracy and every per-subject code path gets rows.
QTYPE_META = {
    "count": {
        "subject": "natural science",
        "grade": "grade1",
        "topic": "counting",
        "category": "Count shapes",
        "skill": "Count the shapes in a picture",
        "lecture": "To count the shapes in a picture, point at each shape once.",
        "hint": "",
    },
    "colour": {
        "subject": "language science",
        "grade": "grade1",
        "topic": "vocabulary",
        "category": "Colour words",
        "skill": "Name the colour of a shape",
        "lecture": "Red, green, blue and yellow are colour words.",
        "hint": "",
    },
    "position": {
        "subject": "social science",
        "grade": "grade2",
        "topic": "geography",
        "category": "Left, right, top and bottom",
        "skill": "Say where a shape is in a picture",
        "lecture": "Left, right, top and bottom are directions in a picture.",
        # Some rows carry a hint so the "Context: ..." prompt path gets exercised.
        "hint": "Left and right are as you look at the picture.",
    },
}


def split_of(index: int) -> str:
    """80/10/10 train/validation/test, by position."""
    return "train" if index % 10 < 8 else ("validation" if index % 10 == 8 else "test")


def _image_struct(png: bytes, name: str) -> dict[str, Any]:
    return {"bytes": png, "path": f"{name}.png"}


def scienceqa_rows(scenes: list[Scene], pngs: list[bytes], seed: int) -> list[dict[str, Any]]:
    """One multiple-choice question per image; the preferred type cycles, falling back in order."""
    rng = random.Random(f"{seed}:scienceqa")  # noqa: S311 - data generation, not security
    order = list(QUESTION_TYPES)
    rows = []
    for i, (scene, png) in enumerate(zip(scenes, pngs, strict=True)):
        preferred = order[i % 3 :] + order[: i % 3]
        # count is always answerable, so one of them returns a question
        q = next(q for t in preferred if (q := QUESTION_TYPES[t](scene, rng)) is not None)
        meta = QTYPE_META[q.qtype]
        rows.append(
            {
                "image": _image_struct(png, f"shapes-{seed}-{i:05d}"),
                "question": q.text,
                "choices": q.choices,
                "answer": q.answer,
                "hint": meta["hint"],
                "task": "closed choice",
                "grade": meta["grade"],
                "subject": meta["subject"],
                "topic": meta["topic"],
                "category": meta["category"],
                "skill": meta["skill"],
                "lecture": meta["lecture"],
                "solution": q.solution,
                "split": split_of(i),
                "scene": scene.to_json(),
            }
        )
    return rows


def pope_rows(scenes: list[Scene], pngs: list[bytes], seed: int) -> list[dict[str, Any]]:
    """Per image and category one present and one absent object: exactly 50% yes per category."""
    rng = random.Random(f"{seed}:pope")  # noqa: S311 - data generation, not security
    ranking = object_ranking(scenes)
    rows: list[dict[str, Any]] = []
    for category in POPE_CATEGORIES:
        for i, (scene, png) in enumerate(zip(scenes, pngs, strict=True)):
            source = f"shapes-{seed}-{i:05d}"
            present = rng.choice(scene.shapes)
            pair = [
                ((present.colour, present.kind), "yes"),
                (pope_negative(scene, category, rng, ranking), "no"),
            ]
            rng.shuffle(pair)  # so that "yes first" is not a shortcut
            for (colour, kind), answer in pair:
                rows.append(
                    {
                        "question_id": len(rows),
                        "question": existence_text(colour, kind),
                        "answer": answer,
                        "image": _image_struct(png, source),
                        "image_source": source,
                        "category": category,
                        "scene": scene.to_json(),
                    }
                )
    return rows


_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_STR_LIST = pa.list_(pa.field("element", pa.string()))

_TEXT_COLUMNS = [
    "hint",
    "task",
    "grade",
    "subject",
    "topic",
    "category",
    "skill",
    "lecture",
    "solution",
    "split",  # not in HF ScienceQA (there it is the file); one file here carries all three
    "scene",  # the scene as JSON, for the oracle judge and importers
]
SCIENCEQA_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("image", _IMAGE_TYPE),
    ("question", pa.string()),
    ("choices", _STR_LIST),
    ("answer", pa.int64()),
    *((name, pa.string()) for name in _TEXT_COLUMNS),
]
POPE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("question_id", pa.int64()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("image", _IMAGE_TYPE),
    ("image_source", pa.string()),
    ("category", pa.string()),
    ("scene", pa.string()),
]


def _hf_feature(arrow_type: pa.DataType) -> dict[str, Any]:
    """The `datasets` feature JSON for a column, as datasets 5.x writes it itself."""
    if arrow_type == _IMAGE_TYPE:
        return {"_type": "Image"}
    if pa.types.is_list(arrow_type):
        return {"feature": _hf_feature(arrow_type.value_type), "_type": "List"}
    return {"dtype": str(arrow_type), "_type": "Value"}


def _schema(columns: list[tuple[str, pa.DataType]]) -> pa.Schema:
    # Under b"huggingface", so that `datasets` decodes the image struct as a PIL image.
    features = {name: _hf_feature(t) for name, t in columns}
    meta = json.dumps({"info": {"features": features}})
    return pa.schema(columns, metadata={b"huggingface": meta.encode()})


def _write(
    path: str | Path, rows: list[dict[str, Any]], columns: list[tuple[str, pa.DataType]]
) -> None:
    table = pa.Table.from_pylist(rows, schema=_schema(columns))
    pq.write_table(table, str(path))


def write_scienceqa_parquet(path: str | Path, rows: list[dict[str, Any]]) -> None:
    _write(path, rows, SCIENCEQA_COLUMNS)


def write_pope_parquet(path: str | Path, rows: list[dict[str, Any]]) -> None:
    _write(path, rows, POPE_COLUMNS)


def make_shapes(out_dir: str | Path, *, n: int, seed: int) -> dict[str, Any]:
    """Write out_dir/scienceqa.parquet and out_dir/pope.parquet for n images; return counts.

    Deterministic: the same n and seed give byte-identical files.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:scenes")  # noqa: S311 - data generation, not security
    scenes = [random_scene(rng) for _ in range(n)]
    pngs = [png_bytes(draw_scene(s)) for s in scenes]
    sqa = scienceqa_rows(scenes, pngs, seed)
    pope = pope_rows(scenes, pngs, seed)
    write_scienceqa_parquet(out / "scienceqa.parquet", sqa)
    write_pope_parquet(out / "pope.parquet", pope)
    return {
        "images": n,
        "scienceqa": len(sqa),
        "pope": len(pope),
        "splits": dict(Counter(r["split"] for r in sqa)),
        "subjects": dict(Counter(r["subject"] for r in sqa)),
        "pope_categories": dict(Counter(r["category"] for r in pope)),
        "pope_yes": sum(r["answer"] == "yes" for r in pope),
    }
