"""A rule-based judge for items whose answer is known (the shapes world, ScienceQA, POPE).

The rules, documented because ratings built on them train models:
- The answer a response gives: "The answer is X" / "Answer: X", a leading option letter
  ("B", "B.", "(B)"), a yes/no in its first words for yes/no questions, its first word for
  a short-answer question ("2", "Red."), or else the one option whose text it names.
- correctness: 4 the right answer and no other option; 2 the right answer among others;
  1 a wrong answer; 0 no answer found.
- helpfulness: 4 right and direct (the answer within its first 40 words); 3 right but
  buried; 1 wrong; 0 no answer.
- coherence: 0 empty; 1 more than 20% of its characters are not ordinary text
  (replacement or control characters, stray symbols); 2 a word repeated three times in a
  row or more than half its words repeats; else 4.
- complexity: from the mean word length: <4 -> 0, <5 -> 1, <6 -> 2, <7 -> 3, else 4.
- verbosity: from the word count: <=3 -> 0, <=12 -> 1, <=40 -> 2, <=100 -> 3, else 4.
"""

from __future__ import annotations

import re
import string

from annotation.core.judges.base import (
    CompletionRating,
    FatalJudgeError,
    JudgeItem,
    JudgeResult,
    TextResult,
    Usage,
)
from annotation.core.judges.pairwise import PairVerdict

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ANSWER_IS = re.compile(r"(?:the answer is|answer:)\s*\(?([A-Z])\b\)?", re.IGNORECASE)
_LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:[.):]|\s|$)")
_ORDINARY = set(string.ascii_letters + string.digits + string.whitespace + ".,;:!?'\"()-%/")


def known_answer(item: JudgeItem) -> str | None:
    if item.answer_index is not None and 0 <= item.answer_index < len(item.choices):
        return item.choices[item.answer_index]
    if item.reference_answer:
        return item.reference_answer
    scene = item.facts.get("scene")
    if scene:
        from datasets_app.core.shapes import oracle_answer

        return oracle_answer(scene, item.question)
    return None


def given_answers(text: str, item: JudgeItem, truth: str | None = None) -> list[str]:
    """The option texts (or yes/no, or a short answer's first word) a response commits to."""
    stripped = text.strip()
    if not item.choices:
        if truth is not None and truth.strip().lower() not in ("yes", "no"):
            # A short answer ("2", "red", "Red."): its first word is the answer given.
            first = re.findall(r"[a-z0-9]+", stripped.lower())[:1]
            return first
        words = re.findall(r"[a-z]+", stripped.lower())[:6]
        if words and words[0] in ("yes", "no"):
            return [words[0]]
        if any(w in ("no", "not") for w in words):
            return ["no"]
        return ["yes"] if "yes" in words else []
    for pattern in (_ANSWER_IS, _LEADING_LETTER):
        match = pattern.search(stripped)
        if match:
            index = LETTERS.find(match.group(1).upper())
            if 0 <= index < len(item.choices):
                return [item.choices[index]]
    lowered = stripped.lower()
    return [c for c in item.choices if re.search(rf"\b{re.escape(c.lower())}\b", lowered)]


def _coherence(text: str) -> int:
    if not text.strip():
        return 0
    odd = sum(1 for ch in text if ch not in _ORDINARY)
    if odd / len(text) > 0.2:
        return 1
    words = re.findall(r"\w+", text.lower())
    tripled = any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2))
    if tripled or (len(words) > 4 and len(set(words)) < len(words) / 2):
        return 2
    return 4


def _bucket(value: float, edges: tuple[float, ...]) -> int:
    return next((score for score, edge in enumerate(edges) if value <= edge), len(edges))


def rate_completion(text: str, item: JudgeItem, truth: str | None) -> CompletionRating:
    words = re.findall(r"\S+", text)
    answers = given_answers(text, item, truth)
    normal = truth.strip().lower() if truth else None
    right = normal is not None and normal in (a.lower() for a in answers)
    if not answers:
        correctness, helpfulness, why = 0, 0, "gives no answer"
    elif right and len(answers) == 1:
        correctness, why = 4, f"answers {truth!r}, which is right"
        early = given_answers(" ".join(words[:40]), item, truth)
        helpfulness = 4 if [a.lower() for a in early] == [normal] else 3
    elif right:
        correctness, helpfulness, why = 2, 3, f"names {truth!r} among other options"
    else:
        correctness, helpfulness, why = 1, 1, f"answers {answers[0]!r}; the answer is {truth!r}"
    mean_len = sum(len(w) for w in words) / len(words) if words else 0.0
    return CompletionRating(
        helpfulness=helpfulness,
        correctness=correctness,
        coherence=_coherence(text),
        complexity=_bucket(mean_len, (3.99, 4.99, 5.99, 6.99)),
        verbosity=_bucket(len(words), (3, 12, 40, 100)),
        reasoning=f"It {why}; {len(words)} words.",
    )


class OracleJudge:
    """Needs no model and no network: scores from the known answer and text rules."""

    provider = "oracle"

    def __init__(self, *, model: str = "rules-v1") -> None:
        self.model = model

    def rate(self, item: JudgeItem) -> JudgeResult:
        truth = known_answer(item)
        ratings = tuple(rate_completion(text, item, truth) for text in item.completions)
        reasoning = (
            f"The known answer is {truth!r}." if truth else "No known answer: correctness 0."
        )
        return JudgeResult(ratings=ratings, reasoning=reasoning, raw="", usage=Usage())

    def compare(self, item: JudgeItem) -> PairVerdict:
        """The better of two completions by helpfulness + correctness + coherence (seed
        001's sum of its own ratings); equal sums tie."""
        first, second = self.rate(item).ratings
        sums = [r.helpfulness + r.correctness + r.coherence for r in (first, second)]
        winner = None if sums[0] == sums[1] else (0 if sums[0] > sums[1] else 1)
        return PairVerdict(winner, f"score sums {sums[0]} and {sums[1]}", raw="")

    def answer(self, item: JudgeItem) -> TextResult:
        """The known answer, in the form the seed sets train on ("The answer is X.")."""
        truth = known_answer(item)
        if truth is None:
            raise FatalJudgeError(f"the oracle knows no answer to prompt {item.key}")
        if item.choices and truth in item.choices:
            return TextResult(f"The answer is {LETTERS[item.choices.index(truth)]}.")
        return TextResult(truth[:1].upper() + truth[1:] + ".")

    def complete(
        self, prompt: str, image: bytes | None = None, image_mime: str = "image/png"
    ) -> TextResult:
        raise FatalJudgeError("the oracle only answers questions with a known answer")
