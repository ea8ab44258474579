"""Verifiable rewards for GRPO (issue 17.4): an answer checked against the prompt's
reference, with no judge. Pure: no Django, no torch.

The reference says how to read the answer:
- "yes" / "no" (POPE): the answer's first word, as `parse_yes_no` reads it;
- a multiple-choice target ("B", "B.", "The answer is B."): the letter the answer commits
  to (`parse_choice`, over the options a letter can name);
- anything else (a short answer: "2", "red"): the answer's first word, case and
  punctuation aside.

`answer_reward` is 1.0 for the right answer and 0.0 otherwise; `format_reward` is 1.0 for an
answer in the form the reference asks (a yes/no, a letter, at most three words), so that a
run can weigh a little for being readable (GRPO's usual format term).
"""

from __future__ import annotations

import re

from training.core.evaluation.parsing import LETTERS, parse_choice, parse_yes_no

_WORD = re.compile(r"[a-z0-9]+")
_LETTER_TARGET = re.compile(r"^(?:the answer is\s*)?\(?([A-Z])\)?\.?$", re.IGNORECASE)
SHORT_WORDS = 3


def _kind(reference: str) -> tuple[str, str]:
    """(kind, expected): ("yes_no", "yes"), ("letter", "B") or ("word", "red")."""
    text = reference.strip()
    lowered = text.lower().rstrip(".")
    if lowered in ("yes", "no"):
        return "yes_no", lowered
    letter = _LETTER_TARGET.match(text)
    if letter and len(text) <= 20:
        return "letter", letter.group(1).upper()
    words = _WORD.findall(text.lower())
    return "word", words[0] if words else ""


def given_answer(answer: str, reference: str) -> str | None:
    """What `answer` says, read the way `reference` is written; None if unreadable."""
    kind, _ = _kind(reference)
    if kind == "yes_no":
        return parse_yes_no(answer)
    if kind == "letter":
        index = parse_choice(answer, len(LETTERS))
        return None if index is None else LETTERS[index]
    words = _WORD.findall(answer.lower())
    return words[0] if words else None


def answer_reward(answer: str, reference: str) -> float:
    _, expected = _kind(reference)
    return 1.0 if expected and given_answer(answer, reference) == expected else 0.0


def format_reward(answer: str, reference: str) -> float:
    kind, _ = _kind(reference)
    if given_answer(answer, reference) is None:
        return 0.0
    if kind == "word" and len(_WORD.findall(answer.lower())) > SHORT_WORDS:
        return 0.0
    return 1.0
