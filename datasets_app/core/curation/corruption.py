"""A plausible hallucination made from a correct answer, for `corrupted` pairs (POVID-style,
seed 002 section 3.3): chosen = the reference answer, rejected = the same answer with one
fact changed.

Two ways: a judge rewrites the answer (`CORRUPT_TEMPLATE`, the service keeps each call so a
rebuild pays nothing), or, free and exact on the shapes world, `oracle_corruption` swaps one
colour, count, shape, side or yes/no in the text for another of its kind. Pure core.
"""

from __future__ import annotations

import random
import re

__all__ = ["CORRUPT_TEMPLATE", "SWAP_GROUPS", "oracle_corruption"]

CORRUPT_TEMPLATE = """\
Below is a question about an image and its correct answer. Rewrite the answer so that it \
contains one plausible hallucination: change exactly one object, colour, count, position \
or yes/no so that the answer becomes wrong about the image, and keep everything else \
(wording, length, style) the same. Write the rewritten answer only.

QUESTION:
{question}

CORRECT ANSWER:
{answer}
"""

# Words of one kind stand in for each other; each group lists every value, so a swap
# always yields another value of the same kind.
SWAP_GROUPS: tuple[tuple[str, ...], ...] = (
    ("red", "green", "blue", "yellow"),
    ("circle", "square", "triangle"),
    ("left", "right"),
    ("top", "bottom"),
    ("yes", "no"),
    ("one", "two", "three", "four"),
    ("1", "2", "3", "4"),
)
_GROUP_OF = {word: group for group in SWAP_GROUPS for word in group}
_WORD = re.compile(r"\b(" + "|".join(sorted(_GROUP_OF, key=len, reverse=True)) + r")\b", re.I)


def _same_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[0].isupper():
        return word.capitalize()
    return word


def oracle_corruption(answer: str, rng: random.Random) -> str | None:
    """`answer` with one swappable word replaced by another of its kind; None when it has
    none (then the prompt is dropped, or a judge must rewrite it)."""
    matches = list(_WORD.finditer(answer))
    if not matches:
        return None
    match = rng.choice(matches)
    word = match.group(0)
    others = [w for w in _GROUP_OF[word.lower()] if w != word.lower()]
    new = _same_case(rng.choice(others), word)
    return answer[: match.start()] + new + answer[match.end() :]
