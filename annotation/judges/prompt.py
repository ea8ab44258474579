"""The versioned judge prompt. A rating records the version it was made with; a new wording
is a new file (v2.txt), never an edit of an old one."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from annotation.judges.base import JudgeItem

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def prompt_versions() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("v*.txt"))


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


def render_judge_prompt(item: JudgeItem, version: str = "v1") -> str:
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
    )
