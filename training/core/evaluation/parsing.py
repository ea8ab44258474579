"""Reading a model's (or a judge's) answer. Anything these do not recognise counts as wrong.

Multiple choice, after the LLaVA and lmms-eval ScienceQA scorers: "The answer is X" (also
"(X)", a trailing "."), where the LAST such phrase decides, because the chain-of-thought
prompt drafts answers before its final one, and what follows it must be a letter; without
the phrase, a bare letter ("B") or a letter that opens the answer ("B. the red circle",
"(B) ...", "B: ..."). A letter outside the choices is a parse failure, not a guess at
something else in the text.

Without a letter, an answer that is exactly one option's text ("3", "Red.") reads as that
option (`parse_choice(..., choices)`).

Yes/no: the answer must start with "yes" or "no" ("Yes, there is" -> yes).

Beside these lenient readings, the rules of two published scorers, so that a number can be
set against a published table (metrics.py reports each under its scorer's name):
- LLaVA's `llava/eval/eval_pope.py` (haotian-liu/LLaVA): the first sentence (the text up to
  the first "."), commas removed, split on spaces; "No", "no" or "not" among the words means
  no, anything else yes. `parse_yes_no_llava` returns None where that yes is only the
  default (no "yes" among the words), so that the default can be counted.
- lmms-eval's `lmms_eval/tasks/pope/utils.py` (`pope_process_results`): exact match of
  `answer.lower().strip()` against "yes" / "no", so "Yes." is neither
  (`parse_yes_no_exact`); and `lmms_eval/tasks/scienceqa/utils.py`
  (`sqa_process_results`): the stripped answer equals the letter in either case, or starts
  with an uppercase letter and "." ("B. the red circle"); "The answer is B", "(B)" and
  "b." are wrong (`parse_choice_strict`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# After "the answer is": "(x)" in either case; an uppercase letter standing alone; or a
# lowercase letter that ends the text ("the answer is b."), since "the answer is a bird"
# must not read as A.
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_LETTER_AFTER = re.compile(r"\s*:?\s*(?:\(([A-Za-z])\)|([A-Z])(?![\w'])|([a-z])(?=\.?\s*$))")
_BARE = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")
_LEADING = re.compile(r"^\(?([A-Za-z])(?:\)|[.:])(?:\s|$)")
_FIRST_WORD = re.compile(r"[a-z]+")
_MARKUP = " \t\n\"'*`.,:;!?-()[]"
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")


def parse_choice(text: str, n_choices: int, choices: Sequence[str] = ()) -> int | None:
    """The option index an answer commits to, or None.

    With `choices`, a bare answer that is exactly one option's text ("3", "Red.") also
    reads as that option: a model taught short answers names the fact, not its letter
    (issue 14 measured that letter matching is what tiny models fail at). The strict
    lmms-eval reading beside it (`parse_choice_strict`) does not accept it.
    """
    stripped = text.strip()
    if choices and not _ANSWER_IS.search(stripped):
        bare = stripped.rstrip(".").strip().lower()
        named = [i for i, c in enumerate(choices) if c.strip().lower() == bare]
        if len(named) == 1 and not (len(bare) == 1 and bare.isalpha()):  # "B" is a letter
            return named[0]
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


def parse_yes_no_llava(text: str) -> str | None:
    """LLaVA eval_pope.py's reading: "no" where it says no; "yes" where it says yes and the
    first sentence has the word "yes"; None where its yes is the default for an answer with
    neither ("I cannot tell"), which `... or "yes"` turns back into LLaVA's own answer.

    The answer is stripped first, as LLaVA's generation scripts write it.
    """
    sentence = text.strip().split(".")[0].replace(",", "")
    words = sentence.split(" ")  # spaces only, as LLaVA splits: "No!" is not the word "No"
    if "No" in words or "no" in words or "not" in words:
        return "no"
    # Whether a word is "yes" is ours to decide (LLaVA never asks): any case, markup off.
    if any(w.lower().strip(_MARKUP) == "yes" for w in words):
        return "yes"
    return None


def parse_yes_no_exact(text: str) -> str | None:
    """lmms-eval's POPE reading: the whole answer, lower-cased and stripped, is "yes" or
    "no"; anything else (None) is wrong, and never a "yes"."""
    answer = text.lower().strip()
    return answer if answer in ("yes", "no") else None


def parse_choice_strict(text: str) -> str | None:
    """lmms-eval's ScienceQA reading, as the uppercase letter it compares with the target:
    the stripped answer is a letter in either case ("b"), or starts with an uppercase letter
    and a full stop ("B.", "B. the red circle"); None for anything else. A letter outside
    the choices is returned: lmms-eval scores it wrong, not unreadable."""
    answer = text.strip()
    if len(answer) == 1:
        letter = answer.upper()
    elif len(answer) >= 2 and answer[0].isupper() and answer[1] == ".":
        letter = answer[0]
    else:
        return None
    return letter if letter in LETTERS else None


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
