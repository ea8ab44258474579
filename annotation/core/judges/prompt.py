"""The versioned judge prompt. A rating records the version it was made with; a new wording
is a new file (v2.txt), never an edit of an old one.

v2 adds the conversation (earlier turns, images numbered in order) before the question; v1,
one image and one turn, refuses a conversation rather than hide its earlier turns.

The JSON layout the prompt shows is not part of the wording: it is filled in (`{layout}`)
from `answer_layout`, next to the schema it describes, so that prompt and schema cannot
disagree (the providers are sent the schema, which no prompt version records either)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from annotation.core.judges.base import ATTRIBUTES, JudgeItem, response_key

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def prompt_versions() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("v*.txt"))


def answer_layout(k: int) -> str:
    """v2 adds the conversation (earlier turns, images numbered in order) before the question; v1,
    one image and one turn, refuses a conversation rather than hide its earlier turns.

    The JSON layout the prompt shows, the one `ratings_schema(k)` describes."""
    scores = ", ".join(f'"{a}": 0' for a in ATTRIBUTES)
    entry = f'{{"reasoning": "...", {scores}}}'
    keys = [response_key(1)] if k == 1 else [response_key(1), response_key(k)]
    entries = [f'"{key}": {entry}' for key in keys]
    if k > 2:
        entries.insert(1, "...")
    return f'{{"reasoning": "...", {", ".join(entries)}}}'


def render_answer_prompt(item: JudgeItem, version: str = "v1") -> str:
    """The judge answering the question itself (seed 001's "Gemini answer" SFT baseline)."""
    path = PROMPT_DIR / f"answer_{version}.txt"
    if not path.is_file():
        raise ValueError(f"no answer prompt for version {version!r}")
    extras = []
    if item.hint:
        extras.append(f"CONTEXT:\n{item.hint}")
    if item.choices:
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
        extras.append(f"OPTIONS:\n{options}")
    note = " End with 'The answer is X.', X being the letter of the option." if item.choices else ""
    return path.read_text().format(
        question=item.question, extras="\n".join(extras), choice_note=note
    )


@cache
def _template(version: str) -> str:
    path = PROMPT_DIR / f"{version}.txt"
    if not path.is_file():
        raise ValueError(f"unknown judge prompt version {version!r}; have {prompt_versions()}")
    return path.read_text()


# The first wording, kept for the ratings made with it: one image, no earlier turns.
SINGLE_TURN_VERSIONS = ("v1",)
DEFAULT_VERSION = "v2"


def conversation_section(item: JudgeItem) -> str:
    """The earlier turns, images numbered in order ("[image 1]"), and which images come
    with the question; empty for a single-turn prompt with at most one image."""
    if not item.turns and len(item.images) <= 1:
        return ""
    lines, seen = [], 0
    for turn in item.turns:
        pieces = []
        for part in turn["content"]:
            if part.get("type") == "image":
                seen += 1
                pieces.append(f"[image {seen}]")
            elif (part.get("text") or "").strip():
                pieces.append(part["text"].strip())
        lines.append(f"{turn['role'].upper()}: {' '.join(pieces)}")
    section = ""
    if lines:
        section += (
            "CONVERSATION SO FAR (the question below is the user's next turn):\n"
            + "\n".join(lines)
            + "\n\n"
        )
    with_question = range(seen + 1, len(item.images) + 1)
    if with_question:
        names = ", ".join(f"image {n}" for n in with_question)
        section += f"IMAGES WITH THE QUESTION: {names}\n\n"
    return section


def render_pairwise_prompt(item: JudgeItem) -> str:
    """Two completions side by side, the judge asked which is better (pairwise_v1.txt)."""
    if len(item.completions) != 2:
        raise ValueError(f"a pairwise call compares 2 completions, not {len(item.completions)}")
    return render_judge_prompt(item, "pairwise_v1", layout=PAIRWISE_LAYOUT)


PAIRWISE_LAYOUT = '{"reasoning": "...", "winner": "response_1"}'


def render_judge_prompt(
    item: JudgeItem, version: str = DEFAULT_VERSION, *, layout: str | None = None
) -> str:
    section = conversation_section(item)
    if section and version in SINGLE_TURN_VERSIONS:
        raise ValueError(
            f"judge prompt {version} shows one image and no earlier turns; this prompt has "
            f"{len(item.images)} images and {len(item.turns)} earlier turns: rate it with "
            f"{DEFAULT_VERSION}"
        )
    extras = []
    if item.hint:
        extras.append(f"CONTEXT:\n{item.hint}")
    if item.choices:
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
        extras.append(f"OPTIONS:\n{options}")
    reference = ""
    if item.answer_index is not None and 0 <= item.answer_index < len(item.choices):
        reference = f"{LETTERS[item.answer_index]}. {item.choices[item.answer_index]}"
    elif item.reference_answer:
        reference = item.reference_answer
    if reference:
        extras.append(f"REFERENCE ANSWER (known to be correct):\n{reference}")
    responses = "\n\n".join(
        f"RESPONSE {n}:\n{text}" for n, text in enumerate(item.completions, start=1)
    )
    return _template(version).format(
        k=len(item.completions),
        question=item.question,
        extras="\n".join(extras) + ("\n" if extras else ""),
        responses=responses,
        reference_note=" and the reference answer" if reference else "",
        layout=layout if layout is not None else answer_layout(len(item.completions)),
        conversation=section,
    )
