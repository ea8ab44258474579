"""Which ratings of a completion count, and how several are combined into one set of scores.

A completion may be rated by judges ("judge:3"), annotators ("user:7") and a resolution
("resolution:7": a person settling a disagreement). A `RaterSelection` says which of those
count and how to combine them; it is stored with each dataset version (`to_dict`) so that
the version can be rebuilt exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets_app.core.curation.types import RatedCompletion

# "import": the picks that came with an imported preference file (import:SOURCE_ID).
RATER_KINDS = ("judge", "user", "resolution", "import")
COMBINE_MODES = ("mean", "precedence")

# Means are fractional (judge 4 + user 3 -> 3.5), so "mean" gives floats (always, so that a
# version's score columns have one type), although types.Scores says int; "precedence" gives
# the winning rater's integers unchanged.
CombinedScores = dict[str, float]


def rater_kind(key: str) -> str:
    return key.partition(":")[0]


def rater_sort_key(key: str) -> tuple[int, int | str]:
    # Numeric ids sort as numbers ("user:10" after "user:9"); anything else after them.
    ident = key.partition(":")[2]
    return (0, int(ident)) if ident.isdigit() else (1, ident)


@dataclass(frozen=True)
class RaterSelection:
    """Which ratings count, and how several are combined.

    raters:  explicit judge/user keys ("judge:3", "user:7"). Empty: every rater of `kinds`.
             With combine="precedence", their order is the precedence.
    kinds:   the rater kinds that count. When it includes "resolution", a resolution present
             on a completion replaces every other rating of it: a resolution is the settled
             answer to a disagreement, so averaging it with the ratings it overrules would
             undo it. Resolutions are chosen by kind only, never listed in `raters`.
    combine: "mean" (per-attribute mean, rounded to 2 decimals) or "precedence" (the first
             rater in `raters` order, or without `raters` in `kinds` order then by id, wins).
    """

    raters: tuple[str, ...] = ()
    kinds: tuple[str, ...] = RATER_KINDS
    combine: str = "mean"

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_MODES:
            raise ValueError(
                f"combine must be one of {', '.join(COMBINE_MODES)}, not {self.combine!r}"
            )
        if not self.kinds:
            raise ValueError("kinds must name at least one rater kind")
        for kind in self.kinds:
            if kind not in RATER_KINDS:
                raise ValueError(f"unknown rater kind {kind!r}; kinds are {', '.join(RATER_KINDS)}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds has duplicates: {', '.join(self.kinds)}")
        if len(set(self.raters)) != len(self.raters):
            raise ValueError(f"raters has duplicates: {', '.join(self.raters)}")
        for key in self.raters:
            kind, _, ident = key.partition(":")
            if kind not in ("judge", "user") or not ident:
                raise ValueError(
                    f"rater {key!r} is not a 'judge:ID' or 'user:ID' key "
                    "(resolutions are selected by including 'resolution' in kinds)"
                )
            if kind not in self.kinds:
                raise ValueError(f"rater {key!r} is of kind {kind!r}, which kinds leaves out")

    def counts(self, key: str) -> bool:
        """Whether a rating (or a pick) by `key` counts under this selection."""
        kind = rater_kind(key)
        if kind not in self.kinds:
            return False
        if kind == "resolution":
            return True
        return not self.raters or key in self.raters

    def describe(self) -> str:
        """A short, stable text for the `rater` column: "mean:judge+user+resolution"."""
        joiner = ">" if self.combine == "precedence" else "+"
        if self.raters:
            who = joiner.join(self.raters)
            if "resolution" in self.kinds:
                who += ";resolution"
        else:
            who = joiner.join(self.kinds)
        return f"{self.combine}:{who}"

    def to_dict(self) -> dict[str, Any]:
        return {"raters": list(self.raters), "kinds": list(self.kinds), "combine": self.combine}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaterSelection:
        unknown = sorted(set(data) - {"raters", "kinds", "combine"})
        if unknown:
            raise ValueError(f"unknown rater selection field(s): {', '.join(unknown)}")
        return cls(
            raters=tuple(data.get("raters", ())),
            kinds=tuple(data.get("kinds", RATER_KINDS)),
            combine=data.get("combine", "mean"),
        )


def combined_scores(
    completion: RatedCompletion, selection: RaterSelection
) -> CombinedScores | None:
    """The completion's scores under `selection`, or None when no selected rater rated it."""
    keys = [key for key in completion.ratings if selection.counts(key)]
    resolutions = [key for key in keys if rater_kind(key) == "resolution"]
    pool = resolutions or keys
    if not pool:
        return None
    if selection.combine == "precedence":
        # The winner's own integers, unchanged.
        return dict(completion.ratings[_first(pool, selection)])
    # Per attribute, so that a rater who left one attribute out does not erase it.
    attributes = sorted({a for key in pool for a in completion.ratings[key]})
    means: CombinedScores = {}
    for attribute in attributes:
        values = [
            completion.ratings[k][attribute] for k in pool if attribute in completion.ratings[k]
        ]
        means[attribute] = round(sum(values) / len(values), 2)
    return means


def _first(pool: list[str], selection: RaterSelection) -> str:
    if selection.raters and rater_kind(pool[0]) != "resolution":
        return min(pool, key=selection.raters.index)
    return min(pool, key=lambda k: (selection.kinds.index(rater_kind(k)), rater_sort_key(k)))
