"""A panel of judges (issue 18.3, PoLL style: Verga et al. 2024): one rater whose scores
are the mean or the median of its members' scores. Pure: no Django.

A panel's model string names how it combines and whom, "median:3,5,8" (judge ids, sorted),
so that a panel is one JudgeConfig like any judge and its ratings are curated, suggested
and compared as any judge's are. Scores stay on the 0-4 integer scale: a mean, or the
median of an even number of members, is rounded half up (2.5 -> 3).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from annotation.core.judges.base import ATTRIBUTES

MODES = ("mean", "median")
MIN_MEMBERS = 2


def panel_model(mode: str, members: Sequence[int]) -> str:
    """The canonical model string: the mode, then the member ids sorted and unique."""
    check_panel(mode, members)
    return f"{mode}:{','.join(str(m) for m in sorted(set(members)))}"


def check_panel(mode: str, members: Sequence[int]) -> None:
    if mode not in MODES:
        raise ValueError(f"a panel combines by {' or '.join(MODES)}, not {mode!r}")
    if len(set(members)) < MIN_MEMBERS:
        raise ValueError(f"a panel needs at least {MIN_MEMBERS} different judges")


def parse_panel_model(model: str) -> tuple[str, tuple[int, ...]]:
    """("median", (3, 5, 8)) from "median:3,5,8"; ValueError says what is wrong."""
    mode, _, ids = model.partition(":")
    try:
        members = tuple(int(x) for x in ids.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"panel members are judge ids, as in median:3,5,8; not {ids!r}") from None
    check_panel(mode, members)
    return mode, members


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def combine(ratings: Sequence[Mapping[str, float]], mode: str) -> dict[str, int]:
    """The panel's scores from its members' scores of one completion."""
    if not ratings:
        raise ValueError("no member rated this completion")
    pick = statistics.fmean if mode == "mean" else statistics.median
    return {a: _round_half_up(pick([float(r[a]) for r in ratings])) for a in ATTRIBUTES}


class PanelJudge:
    """A panel called live, for where ratings are not stored first (an evaluation's judge):
    every member rates (or reviews) the item and the panel answers their mean or median.
    A member's failure is the panel's (the runner asks again). Usage is the members' sum
    (their prices differ, so a panel has no price of its own)."""

    provider = "panel"

    def __init__(self, members: Sequence[Any], mode: str, *, model: str = "") -> None:
        check_panel(mode, list(range(len(members))))
        self.members, self.mode = list(members), mode
        self.model = model or f"{mode}:" + ",".join(m.model for m in members)

    def rate(self, item: Any) -> Any:
        from annotation.core.judges.base import CompletionRating, JudgeResult, Usage

        results = [member.rate(item) for member in self.members]
        usage = sum((r.usage for r in results), Usage())
        combined = [
            combine([r.ratings[i].scores for r in results], self.mode)
            for i in range(len(item.completions))
        ]
        ratings = tuple(
            CompletionRating(
                helpfulness=c["helpfulness"],
                correctness=c["correctness"],
                coherence=c["coherence"],
                complexity=c["complexity"],
                verbosity=c["verbosity"],
            )
            for c in combined
        )
        reasoning = f"the {self.mode} of {len(results)} judges"
        raw = "\n---\n".join(r.raw for r in results)
        return JudgeResult(ratings=ratings, reasoning=reasoning, raw=raw, usage=usage)

    def complete(
        self, prompt: str, image: bytes | None = None, image_mime: str = "image/png"
    ) -> Any:
        """A review (LLaVA-Bench's "X Y" first line): the members' scores combined."""
        from annotation.core.judges.base import InvalidJudgeOutput, TextResult, Usage
        from training.core.evaluation.parsing import parse_review_scores

        results = [member.complete(prompt, image, image_mime) for member in self.members]
        usage = sum((r.usage for r in results), Usage())
        scores = [parse_review_scores(r.text) for r in results]
        if any(s is None for s in scores):
            raise InvalidJudgeOutput(
                "a member's review has no 'X Y' first line",
                raw="\n---\n".join(r.text for r in results),
                usage=usage,
            )
        pick = statistics.fmean if self.mode == "mean" else statistics.median
        first = pick([s[0] for s in scores if s is not None])
        second = pick([s[1] for s in scores if s is not None])
        body = "\n---\n".join(r.text for r in results)
        return TextResult(f"{first:g} {second:g}\n{body}", usage)
