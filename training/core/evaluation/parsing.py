"""Reading a model's (or a judge's) answer. Anything these do not recognise counts as wrong.

Multiple choice, after the LLaVA and lmms-eval ScienceQA scorers: "The answer is X" (also
"(X)", a trailing "."), where the LAST such phrase decides, because the chain-of-thought
prompt drafts answers before its final one, and what follows it must be a letter; without
the phrase, a bare letter ("B") or a letter that opens the answer ("B. the red circle",
"(B) ...", "B: ..."). A letter outside the choices is a parse failure, not a guess at
something else in the text.
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# After "the answer is": "(x)" in either case; an uppercase letter standing alone; or a
# lowercase letter that ends the text ("the answer is b."), since "the answer is a bird"
# must not read as A.
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_LETTER_AFTER = re.compile(r"\s*:?\s*(?:\(([A-Za-z])\)|([A-Z])(?![\w'])|([a-z])(?=\.?\s*$))")
_BARE = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")
_LEADING = re.compile(r"^\(?([A-Za-z])(?:\)|[.:])(?:\s|$)")
_FIRST_WORD = re.compile(r"[a-z]+")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")


def parse_choice(text: str, n_choices: int) -> int | None:
    """The option index an answer commits to, or None."""
    stripped = text.strip()
    phrases = list(_ANSWER_IS.finditer(stripped))
    if phrases:
        # The final "The answer is" decides, even when a draft before it named a letter.
        after = _LETTER_AFTER.match(stripped, phrases[-1].end())
        if after is None:
            return None
        letter = "".join(after.groups(""))  # exactly one of the three groups matched
    elif m := (_BARE.match(stripped) or _LEADING.match(stripped)):
        letter = m.group(1)
    else:
        return None
    index = LETTERS.find(letter.upper())
    return index if 0 <= index < n_choices else None


def parse_yes_no(text: str) -> str | None:
    """ "yes" or "no" when the answer starts with it ("Yes, there is" -> yes), else None."""
    match = _FIRST_WORD.search(text.lower())
    if match is None or text.lower()[: match.start()].strip(" \t\n\"'*`.,:;!-()[]"):
        return None
    word = match.group(0)
    return word if word in ("yes", "no") else None


def parse_review_scores(text: str) -> tuple[float, float] | None:
    """LLaVA-Bench review: the first line holds the two scores "X Y" (commas allowed).

    Returns (reference assistant's score, model's score), each within 0-10, or None.
    """
    for line in text.strip().splitlines():
        if line.strip():
            first = line
            break
    else:
        return None
    parts = first.replace(",", " ").replace("*", " ").split()
    if len(parts) != 2 or not all(_NUMBER.match(p) for p in parts):
        return None
    a, b = float(parts[0]), float(parts[1])
    if not (0 <= a <= 10 and 0 <= b <= 10):
        return None
    return a, b
