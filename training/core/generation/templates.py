"""Prompt templates by name. The name is stored with every completion.

Each template turns a question (with its options and hint, when it has them) into the text
of the user turn; the processor's chat template then adds the image and the roles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# LLaVA-1.5's instruction for short answers (its VQA data and its POPE evaluation).
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
# lmms-eval's ScienceQA-IMG instruction after the lettered options.
LETTER_ANSWER_SUFFIX = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class PromptInput:
    question: str
    choices: Sequence[str] = ()
    hint: str = ""


def lettered_options(choices: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))


def _plain(p: PromptInput) -> str:
    return p.question


def _short_answer(p: PromptInput) -> str:
    return p.question + SHORT_ANSWER_SUFFIX


def _lmms(p: PromptInput) -> str:
    # lmms-eval's ScienceQA-IMG prompt: what `scienceqa` evaluation asks by default.
    context = f"Context: {p.hint}\n" if p.hint else ""
    return f"{context}{p.question}\n{lettered_options(p.choices)}\n{LETTER_ANSWER_SUFFIX}"


def _with_options(header: str, p: PromptInput) -> str:
    lines = [header]
    if p.hint:
        lines.append(f"Context: {p.hint}")
    lines.append(f"Question: {p.question}")
    if p.choices:
        lines.append(f"Options:\n{lettered_options(p.choices)}")
    return "\n".join(lines)


def _zero_shot_mc(p: PromptInput) -> str:
    # Seed 003, Figure 2.
    return _with_options(
        "Given the question, please choose the answer from one of the following options.\n"
        "Then write your final response in the 'The answer is (answer)' format.",
        p,
    )


def _cot_thought(p: PromptInput) -> str:
    # Seed 003, Figure 3 (the "specific thought prompt" of Wu et al.).
    return _with_options(
        "Please select the correct answer from one of the following options based on the "
        "question and the image.\n"
        "First, write down your internal thoughts. This must include your draft response and "
        "its evaluations.\n"
        "Then write your final response in the 'The answer is (answer)' format.",
        p,
    )


TEMPLATES: dict[str, Callable[[PromptInput], str]] = {
    "plain": _plain,
    "short_answer": _short_answer,  # what POPE evaluation asks, so pairs train on its prompt
    "lmms": _lmms,  # what ScienceQA evaluation asks (lmms-eval's layout)
    "zero_shot_mc": _zero_shot_mc,
    "cot_thought": _cot_thought,
}


def render_prompt(template: str, prompt: PromptInput) -> str:
    try:
        return TEMPLATES[template](prompt)
    except KeyError:
        names = ", ".join(sorted(TEMPLATES))
        raise ValueError(f"unknown prompt template {template!r}; templates are {names}") from None
