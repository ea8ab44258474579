"""The synthetic "shapes" world: images of coloured shapes with questions whose answers are known.

Pure core (no Django): the tiny LLaVA is trained and evaluated on it without a network, and the
rule-based oracle judge (`oracle_answer`) rates completions against the truth. `make_shapes`
writes the world as a ScienceQA-layout parquet (one multiple-choice question per image) and a
POPE-layout parquet (yes/no existence questions, exactly half "yes" in each category), both
loadable by `datasets` with the image column decoded as PIL images.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from training.core.generation.templates import SHORT_ANSWER_SUFFIX

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
# Colours that "usually occur together" in a world drawn with `cooccur` > 0.
PARTNERS = {"red": "yellow", "yellow": "red", "blue": "green", "green": "blue"}
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


@dataclass(frozen=True)
class World:
    """What a shapes data set asks about, and how its scenes are drawn."""

    max_shapes: int = 4
    question_types: tuple[str, ...] = ("count", "colour", "position")
    # "shape": POPE asks about colour+kind ("Is there a red circle in the image?");
    # "colour": about a colour alone ("Is there a red shape in the image?").
    pope_objects: str = "shape"
    cooccur: float = 0.0  # see random_scene
    # With a part, only scenes whose hash falls in that half are drawn (`scene_part`): the
    # instruction set's images (part 0) and the demo's and loop's (part 1) never overlap.
    part: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.question_types) - {"count", "colour", "position"}
        if unknown or not self.question_types:
            raise ValueError(f"question types are count, colour, position; not {unknown}")
        if self.pope_objects not in ("shape", "colour"):
            raise ValueError(f"pope_objects is 'shape' or 'colour', not {self.pope_objects!r}")
        if not 1 <= self.max_shapes <= 4 or not 0 <= self.cooccur <= 1:
            raise ValueError("max_shapes is 1-4 and cooccur is 0-1")

    def scene(self, rng: random.Random) -> Scene:
        while True:
            scene = random_scene(rng, max_shapes=self.max_shapes, cooccur=self.cooccur)
            if self.part is None or scene_part(scene) == self.part:
                return scene


def scene_part(scene: Scene) -> int:
    """0 or 1, from a hash of the scene: which of two disjoint halves of the world it is in."""
    return hashlib.sha256(scene.to_json().encode()).digest()[0] % 2


# The world of the first wave: four shapes, colour+kind existence questions.
CLASSIC = World()
# The world the tiny model can learn (issue 14's ceiling table): at most three shapes, count
# and colour questions, POPE about colours, partner colours drawn together half the time.
LEARNABLE = World(
    max_shapes=3, question_types=("count", "colour"), pope_objects="colour", cooccur=0.5, part=1
)
# The same world, other images: where the instruction-tuned start learns (`instruct_rows`).
INSTRUCT = replace(LEARNABLE, part=0)


def random_scene(
    rng: random.Random,
    *,
    width: int = 64,
    height: int = 64,
    min_shapes: int = 1,
    max_shapes: int = 4,
    background: str = "white",
    cooccur: float = 0.0,
) -> Scene:
    """1-4 non-overlapping shapes, each a distinct colour+kind, so "the red circle" names one.

    With `cooccur` > 0, each shape after the first takes, with that chance, the partner
    colour (`PARTNERS`) of a shape already chosen: the co-occurrence statistics that POPE's
    adversarial split samples from, and that a language prior learns.
    """
    n = rng.randint(min_shapes, max_shapes)
    objects = _cooccurring_objects(rng, n, cooccur) if cooccur > 0 else rng.sample(OBJECTS, n)
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


def _cooccurring_objects(rng: random.Random, n: int, cooccur: float) -> list[tuple[str, str]]:
    chosen = [rng.choice(OBJECTS)]
    while len(chosen) < n:
        pool = [o for o in OBJECTS if o not in chosen]
        if rng.random() < cooccur:
            partners = {PARTNERS[colour] for colour, _ in chosen}
            pool = [o for o in pool if o[0] in partners] or pool
        chosen.append(rng.choice(pool))
    return chosen


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
_COLOUR_EXIST_RE = re.compile(rf"Is there an? ({'|'.join(COLOURS)}) shape in the image\?")


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


def colour_existence_text(colour: str) -> str:
    return f"Is there a {colour} shape in the image?"


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


def pope_negative_colour(
    scene: Scene, category: str, rng: random.Random, scenes_stats: ColourStats
) -> str:
    """An absent colour chosen the POPE way for `category`.

    random: any absent colour. popular: the most frequent colour of the whole set that this
    image lacks. adversarial: the absent colour that co-occurs most often, over the set, with
    the colours present (in a world drawn with `cooccur`, a present colour's partner).
    """
    present = {s.colour for s in scene.shapes}
    absent = [c for c in COLOURS if c not in present]
    if category == "random":
        return rng.choice(absent)
    if category == "popular":
        return next(c for c in scenes_stats.ranking if c not in present)
    if category == "adversarial":
        with_present = {c: sum(scenes_stats.together[(p, c)] for p in present) for c in absent}
        return max(absent, key=lambda c: (with_present[c], -list(COLOURS).index(c)))
    raise ValueError(f"unknown POPE category {category!r}")


@dataclass(frozen=True)
class ColourStats:
    """Colour frequencies and co-occurrences over a set of scenes (for POPE's sampling)."""

    ranking: list[str]  # most frequent first
    together: Counter[tuple[str, str]]  # (a, b) -> images with both

    @classmethod
    def of(cls, scenes: Iterable[Scene]) -> ColourStats:
        freq: Counter[str] = Counter()
        together: Counter[tuple[str, str]] = Counter()
        for scene in scenes:
            colours = {s.colour for s in scene.shapes}
            freq.update(colours)
            together.update((a, b) for a in colours for b in colours if a != b)
        ranking = sorted(COLOURS, key=lambda c: (-freq[c], list(COLOURS).index(c)))
        return cls(ranking=ranking, together=together)


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
    if m := _COLOUR_EXIST_RE.fullmatch(q):
        return "yes" if any(s.colour == m[1] for s in scene.shapes) else "no"
    return None


def question_kind(question: str) -> str:
    """Which of this module's templates a question is: count, colour, position, existence."""
    q = question.strip().split("\n")[0]
    if q == COUNT_TEXT:
        return "count"
    if _COLOUR_RE.fullmatch(q):
        return "colour"
    if _EXTREME_RE.fullmatch(q) or _SIDE_RE.fullmatch(q) or _LEVEL_RE.fullmatch(q):
        return "position"
    if _EXIST_RE.fullmatch(q) or _COLOUR_EXIST_RE.fullmatch(q):
        return "existence"
    return "other"


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


def scienceqa_rows(
    scenes: list[Scene], pngs: list[bytes], seed: int, world: World = CLASSIC
) -> list[dict[str, Any]]:
    """One multiple-choice question per image; the preferred type cycles, falling back in order."""
    rng = random.Random(f"{seed}:scienceqa")  # noqa: S311 - data generation, not security
    order = list(world.question_types)
    rows = []
    for i, (scene, png) in enumerate(zip(scenes, pngs, strict=True)):
        preferred = order[i % len(order) :] + order[: i % len(order)]
        preferred += [t for t in ("count",) if t not in preferred]
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


def pope_rows(
    scenes: list[Scene], pngs: list[bytes], seed: int, world: World = CLASSIC
) -> list[dict[str, Any]]:
    """Per image and category one present and one absent object: exactly 50% yes per category."""
    rng = random.Random(f"{seed}:pope")  # noqa: S311 - data generation, not security
    ranking = object_ranking(scenes)
    stats = ColourStats.of(scenes)
    rows: list[dict[str, Any]] = []
    for category in POPE_CATEGORIES:
        for i, (scene, png) in enumerate(zip(scenes, pngs, strict=True)):
            source = f"shapes-{seed}-{i:05d}"
            present = rng.choice(scene.shapes)
            if world.pope_objects == "colour":
                absent = pope_negative_colour(scene, category, rng, stats)
                pair = [
                    (colour_existence_text(present.colour), "yes"),
                    (colour_existence_text(absent), "no"),
                ]
            else:
                pair = [
                    (existence_text(present.colour, present.kind), "yes"),
                    (existence_text(*pope_negative(scene, category, rng, ranking)), "no"),
                ]
            rng.shuffle(pair)  # so that "yes first" is not a shortcut
            for question, answer in pair:
                rows.append(
                    {
                        "question_id": len(rows),
                        "question": question,
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


def make_shapes(
    out_dir: str | Path, *, n: int, seed: int, world: World = CLASSIC
) -> dict[str, Any]:
    """Write out_dir/scienceqa.parquet and out_dir/pope.parquet for n images; return counts.

    Deterministic: the same n, seed and world give byte-identical files.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:scenes")  # noqa: S311 - data generation, not security
    scenes = [world.scene(rng) for _ in range(n)]
    pngs = [png_bytes(draw_scene(s)) for s in scenes]
    sqa = scienceqa_rows(scenes, pngs, seed, world)
    pope = pope_rows(scenes, pngs, seed, world)
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


# ---------------------------------------------------------------- an instruction set with a flaw

DESCRIBE_TEXT = "Describe the image."
# Per ten images: four yes/no questions, two counts, two colours, one multiple choice, one
# description (issue 14: seed 000's ScienceQA rows plus yes/no and "Describe the image").
INSTRUCT_CYCLE = (
    *("exist", "exist", "count", "colour", "choice"),
    *("exist", "exist", "count", "colour", "describe"),
)


def describe(scene: Scene) -> str:
    """ "A red circle and a blue square." in left-to-right order."""
    names = [f"a {s.name}" for s in sorted(scene.shapes, key=lambda s: (s.x, s.y))]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text[0].upper() + text[1:] + "."


@dataclass(frozen=True)
class Prior:
    """The flaw planted in an instruction set: its annotators answered from a prior.

    `cooccurrence`: the share of questions about an absent colour whose partner colour
    (PARTNERS) is present that were answered "yes", a language prior that makes the trained
    model hallucinate the partner, as POPE's adversarial split finds in real LLaVAs.
    `disagreement`: the share of all yes/no answers then flipped (annotators who disagree),
    which leaves the model unsure enough that K samples at T=0.7 differ.
    """

    cooccurrence: float = 0.7
    disagreement: float = 0.25

    def __post_init__(self) -> None:
        if not (0 <= self.cooccurrence <= 1 and 0 <= self.disagreement <= 0.5):
            raise ValueError("cooccurrence is 0-1 and disagreement 0-0.5")


def _short(question: str) -> str:
    return question + SHORT_ANSWER_SUFFIX


def _existence_row(scene: Scene, rng: random.Random, prior: Prior) -> tuple[str, str, str]:
    """(question, answer as written, what the prior changed: "", "prior", "disagreement")."""
    present = {s.colour for s in scene.shapes}
    absent = [c for c in COLOURS if c not in present]
    if rng.random() < 0.5 or not absent:
        colour, truth = rng.choice(sorted(present)), "yes"
    else:
        near = [c for c in absent if PARTNERS[c] in present]
        colour = rng.choice(near if near and rng.random() < 0.5 else absent)
        truth = "no"
    answer, planted = truth, ""
    if truth == "no" and PARTNERS[colour] in present and rng.random() < prior.cooccurrence:
        answer, planted = "yes", "prior"
    if rng.random() < prior.disagreement:
        answer = "no" if answer == "yes" else "yes"
        planted = planted or "disagreement"
    return colour_existence_text(colour), answer, planted


# The loop's prompt pool: the questions preference data is collected on (with
# `POOL_CHOICE` added, multiple-choice questions too: see run_loop --multiple-choice).
POOL_CYCLE = ("exist", "exist", "count", "colour")
POOL_CHOICE = ("choice",)
# The subject each kind is filed under: generation asks each subject with its template.
SHORT_ANSWER, MULTIPLE_CHOICE = "short answer", "multiple choice"
KIND_SUBJECT = {
    "exist": SHORT_ANSWER,
    "count": SHORT_ANSWER,
    "colour": SHORT_ANSWER,
    "choice": MULTIPLE_CHOICE,
    "describe": "description",
}


def instruct_rows(
    scenes: list[Scene],
    pngs: list[bytes],
    seed: int,
    prior: Prior,
    *,
    cycle: tuple[str, ...] = INSTRUCT_CYCLE,
    short_suffix: bool = True,
) -> list[dict[str, Any]]:
    """Rows of a "prompts"-format instruction set (all train split), INSTRUCT_CYCLE in turn.

    Yes/no, count and colour questions carry LLaVA's short-answer instruction in their text,
    as LLaVA's own instruction mix does; the multiple-choice rows are ScienceQA-shaped
    (choices and answer_index), for seed 000's short target. `planted` says which answers
    the prior wrote (the truth is in `scene`, and the oracle still knows it).
    Without `short_suffix` the questions are stored bare, for a generation template to ask.
    """
    suffixed = _short if short_suffix else (lambda question: question)
    rng = random.Random(f"{seed}:instruct")  # noqa: S311 - data generation, not security
    rows = []
    for i, (scene, png) in enumerate(zip(scenes, pngs, strict=True)):
        kind = cycle[i % len(cycle)]
        row: dict[str, Any] = {"choices": [], "answer_index": None, "planted": ""}
        if kind == "exist":
            question, row["reference_answer"], row["planted"] = _existence_row(scene, rng, prior)
            row["question"] = suffixed(question)
        elif kind == "count" or (kind == "colour" and colour_question(scene, rng) is None):
            kind = "count"
            row["question"], row["reference_answer"] = suffixed(COUNT_TEXT), str(len(scene.shapes))
        elif kind == "colour":
            counts = Counter(s.kind for s in scene.shapes)
            shape = rng.choice([s for s in scene.shapes if counts[s.kind] == 1])
            row["question"] = suffixed(f"What colour is the {shape.kind}?")
            row["reference_answer"] = shape.colour
        elif kind == "choice":
            q = colour_question(scene, rng) if i % 2 else None
            q = q or count_question(scene, rng)
            row.update(question=q.text, choices=q.choices, answer_index=q.answer)
            row["reference_answer"] = ""
        else:
            row["question"], row["reference_answer"] = DESCRIBE_TEXT, describe(scene)
        rows.append(
            {
                "image": _image_struct(png, f"instruct-{seed}-{i:05d}"),
                **row,
                "kind": kind,
                "subject": KIND_SUBJECT[kind],
                "split": "train",
                "scene": scene.to_json(),
            }
        )
    return rows


INSTRUCT_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("image", _IMAGE_TYPE),
    ("question", pa.string()),
    ("reference_answer", pa.string()),
    ("choices", _STR_LIST),
    ("answer_index", pa.int64()),
    ("kind", pa.string()),
    ("subject", pa.string()),
    ("planted", pa.string()),
    ("split", pa.string()),
    ("scene", pa.string()),
]


def make_instruct(
    path: str | Path,
    *,
    n: int,
    seed: int,
    prior: Prior,
    world: World = INSTRUCT,
    cycle: tuple[str, ...] = INSTRUCT_CYCLE,
    short_suffix: bool = True,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Write an instruction set (a "prompts"-format parquet) for n images; return counts.

    `exclude`: scenes (as JSON) never to draw, e.g. those of an evaluation set.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    rng = random.Random(f"{seed}:instruct-scenes")  # noqa: S311 - data generation
    scenes: list[Scene] = []
    while len(scenes) < n:
        scene = world.scene(rng)
        if scene.to_json() not in exclude:
            scenes.append(scene)
    pngs = [png_bytes(draw_scene(s)) for s in scenes]
    rows = instruct_rows(scenes, pngs, seed, prior, cycle=cycle, short_suffix=short_suffix)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _write(path, rows, INSTRUCT_COLUMNS)
    return {
        "rows": len(rows),
        "kinds": dict(Counter(r["kind"] for r in rows)),
        "planted": dict(Counter(r["planted"] for r in rows if r["planted"])),
    }


def make_loop_data(
    out_dir: str | Path, *, n: int, pool: int, seed: int, multiple_choice: bool = False
) -> dict[str, Any]:
    """What the demo and the loop work on, in the LEARNABLE world: held-out ScienceQA and POPE
    files for n images (seed), and pool.parquet, `pool` prompts on other images (seed + 1,
    none equal to a held-out one) with true answers, stored bare for a generation template to
    ask (with `multiple_choice`, POOL_CHOICE rows too). Returns make_shapes' counts plus the
    pool's under "pool"."""
    out = Path(out_dir)
    counts = make_shapes(out, n=n, seed=seed, world=LEARNABLE)
    held_out = pq.read_table(str(out / "scienceqa.parquet"), columns=["scene"])
    counts["pool"] = make_instruct(
        out / "pool.parquet",
        n=pool,
        seed=seed + 1,
        prior=Prior(cooccurrence=0.0, disagreement=0.0),  # the oracle rates the truth anyway
        world=LEARNABLE,
        cycle=POOL_CYCLE + (POOL_CHOICE if multiple_choice else ()),
        short_suffix=False,
        exclude=frozenset(held_out.column("scene").to_pylist()),
    )
    return counts


def make_conversations(out_dir: str | Path, *, n: int = 40, seed: int = 0) -> Path:
    """`n` two-image conversations of three turns, as a prompts-format JSONL (TRL's
    conversational `prompt` and an `images` list of PNG files next to it): the user shows
    one image and asks how many shapes it holds, the assistant answers truly, then the user
    shows a second image and asks whether a colour is in it. The final turn's scene is the
    row's `scene` metadata, so the oracle judge rates the answers to it. Deterministic."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"conversations:{seed}")  # noqa: S311 - synthetic data, not security
    lines = []
    for i in range(n):
        first, second = (random_scene(rng, max_shapes=3, cooccur=0.5) for _ in range(2))
        names = [f"images/conv-{seed}-{i}-{part}.png" for part in ("a", "b")]
        for name, scene in zip(names, (first, second), strict=True):
            (out / name).write_bytes(png_bytes(draw_scene(scene)))
        colour = rng.choice(sorted(COLOURS))
        question = colour_existence_text(colour)
        prompt = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": COUNT_TEXT}]},
            {"role": "assistant", "content": [{"type": "text", "text": str(len(first.shapes))}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        ]
        row = {
            "prompt": prompt,
            "images": names,
            "reference_answer": oracle_answer(second, question),
            "subject": "conversation",
            "split": "train",
            "metadata": {"scene": json.dumps(second.to_dict())},
        }
        lines.append(json.dumps(row))
    path = out / "conversations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
