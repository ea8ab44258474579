"""Pairwise judging (issue 18.4, LLaVA-Critic style): the judge sees two completions of
one prompt and says which is better, or that they tie. Pure: no Django.

K completions make K(K-1)/2 pairs, twice that when both orders are asked (the position-bias
control: a judge that prefers a place splits its votes). A completion's score is its wins
minus its losses over every comparison it was in; the best and the worst by that score make
a DPO pair. The answer is JSON against `pairwise_schema()`, which states every rule
`parse_verdict` checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from annotation.core.judges.base import InvalidJudgeOutput, Usage, extract_json, response_key

WINNERS = (response_key(1), response_key(2), "tie")


def pairwise_schema() -> dict[str, Any]:
    """Reasoning first, then the winner: one of WINNERS (an enum both providers take)."""
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "winner": {"type": "string", "enum": list(WINNERS)},
        },
        "required": ["reasoning", "winner"],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class PairVerdict:
    winner: int | None  # 0: the first shown, 1: the second, None: a tie
    reasoning: str
    raw: str
    usage: Usage = field(default_factory=Usage)


def parse_verdict(raw: str, *, usage: Usage | None = None) -> PairVerdict:
    """A pairwise answer, validated; InvalidJudgeOutput keeps the raw text."""
    usage = usage or Usage()
    try:
        data = extract_json(raw)
    except InvalidJudgeOutput as exc:
        raise InvalidJudgeOutput(str(exc), raw=raw, usage=usage) from None
    if not isinstance(data, dict):
        raise InvalidJudgeOutput("the answer is not a JSON object", raw=raw, usage=usage)
    winner, reasoning = data.get("winner"), data.get("reasoning", "")
    if winner not in WINNERS:
        raise InvalidJudgeOutput(
            f"winner must be one of {', '.join(WINNERS)}, not {winner!r}", raw=raw, usage=usage
        )
    if not isinstance(reasoning, str):
        raise InvalidJudgeOutput("reasoning is not text", raw=raw, usage=usage)
    index = None if winner == "tie" else WINNERS.index(winner)
    return PairVerdict(index, reasoning.strip(), raw, usage)


def verdict_json(verdict: PairVerdict) -> dict[str, Any]:
    return {"winner": verdict.winner, "reasoning": verdict.reasoning}


def pairs(ids: Sequence[int], *, both_orders: bool) -> list[tuple[int, int]]:
    """The comparisons to ask, as (shown first, shown second)."""
    once = list(combinations(ids, 2))
    return once + [(b, a) for a, b in once] if both_orders else once


def net_wins(verdicts: Iterable[tuple[tuple[int, int], int | None]]) -> dict[int, float]:
    """Wins minus losses per completion; a tie moves neither."""
    score: dict[int, float] = {}
    for (first, second), winner in verdicts:
        score.setdefault(first, 0.0)
        score.setdefault(second, 0.0)
        if winner is None:
            continue
        won, lost = (first, second) if winner == 0 else (second, first)
        score[won] += 1
        score[lost] -= 1
    return score
