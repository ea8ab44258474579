"""What an annotator sends for one item, checked before anything is written (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from annotation.core.judges.base import ATTRIBUTES

MAX_COMMENT = 5000


class SubmissionInvalid(ValueError):
    """`errors` are the messages the page shows; `locs` says where each one is in the
    payload (("scores", "12"), ("best",), ...), for a client that marks fields."""

    def __init__(self, errors: list[str], locs: list[tuple[str, ...]] | None = None) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors
        self.locs = locs if locs is not None else [() for _ in errors]


@dataclass(frozen=True)
class CleanSubmission:
    scores: dict[int, dict[str, int]]  # completion id -> attribute -> 0..4
    best: int | None
    worst: int | None
    tie: bool
    comment: str
    token: str


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def validate_submission(
    payload: Mapping[str, Any], completion_ids: Sequence[int]
) -> CleanSubmission:
    """Every completion of the item scored 0-4 on all five attributes; best and worst two
    different completions of the item, or "all equal"."""
    errors: list[str] = []
    locs: list[tuple[str, ...]] = []

    def refuse(loc: tuple[str, ...], message: str) -> None:
        errors.append(message)
        locs.append(loc)

    raw_scores = payload.get("scores")
    if not isinstance(raw_scores, Mapping):
        raise SubmissionInvalid(["scores are missing"], [("scores",)])
    known = set(completion_ids)
    scores: dict[int, dict[str, int]] = {}
    for key in raw_scores:
        cid = _int(key)
        if cid is None or cid not in known:
            refuse(("scores", str(key)), f"completion {key} is not part of this item")
    for number, cid in enumerate(completion_ids, start=1):
        given = raw_scores.get(str(cid), raw_scores.get(cid))  # JSON keys are strings
        if not isinstance(given, Mapping):
            refuse(("scores", str(cid)), f"response {number} has no scores")
            continue
        row = {}
        for attribute in ATTRIBUTES:
            value = _int(given.get(attribute))
            if value is None or not 0 <= value <= 4:
                refuse(
                    ("scores", str(cid), attribute),
                    f"response {number}: {attribute} needs a score from 0 to 4",
                )
            else:
                row[attribute] = value
        scores[cid] = row
    tie = payload.get("tie") is True
    best, worst = _int(payload.get("best")), _int(payload.get("worst"))
    if tie:
        best = worst = None
    else:
        if best is None or best not in known:
            refuse(("best",), "choose the best response (or mark all equal)")
        if worst is None or worst not in known:
            refuse(("worst",), "choose the worst response (or mark all equal)")
        if best is not None and best == worst:
            refuse(("worst",), "the best and the worst response must differ")
    comment = payload.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        refuse(("comment",), f"the comment must be text of at most {MAX_COMMENT} characters")
        comment = ""
    token = payload.get("token")
    if not isinstance(token, str) or not 8 <= len(token) <= 64:
        refuse(("token",), "the submission has no valid token")
        token = ""
    if errors:
        raise SubmissionInvalid(errors, locs)
    return CleanSubmission(scores, best, worst, tie, comment.strip(), token)
