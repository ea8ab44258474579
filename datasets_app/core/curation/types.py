"""The plain data that curation strategies read and write (no Django).

The service loads prompts, their completions, every rating and every annotator pick into
these dataclasses; a strategy is a pure function from them to rows; the rows are frozen
into a dataset version exactly as returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The HelpSteer order, defined once in the judge core; re-exported for the strategies.
from annotation.core.judges.base import ATTRIBUTES as ATTRIBUTES

Scores = dict[str, float]  # means of several raters are fractional


@dataclass(frozen=True)
class RatedCompletion:
    completion_id: int
    text: str
    # rater key ("judge:3", "user:7", "resolution:7") -> the five scores
    ratings: dict[str, Scores] = field(default_factory=dict)
    # How it was made when not plainly sampled ("bdhs": the policy's own hallucination).
    method: str = ""
    # reward judge key ("judge:9", a reward:CHECKPOINT judge) -> its scalar for this answer
    rewards: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Pick:
    annotator: str  # "user:7"
    chosen_id: int | None
    rejected_id: int | None
    tie: bool = False


@dataclass(frozen=True)
class RatedPrompt:
    prompt_id: int
    source_id: int
    question: str
    completions: tuple[RatedCompletion, ...] = ()
    picks: tuple[Pick, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    hint: str = ""
    reference_answer: str = ""
    has_image: bool = True
    # The prompt's own split ("train", "validation", "test"): only "train" prompts are
    # curated into a version unless the recipe says include_heldout (strategies.run_strategy).
    split: str = "train"
    # ScienceQA extras (lecture, solution), the judge's own answer ("judge_answer"), ...
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferenceRow:
    """A DPO pair: chosen and rejected answers to one prompt."""

    prompt_id: int
    question: str
    chosen: str
    rejected: str
    chosen_id: int | None = None
    rejected_id: int | None = None
    chosen_scores: Scores = field(default_factory=dict)
    rejected_scores: Scores = field(default_factory=dict)
    margin: float = 0.0
    rater: str = ""
    split: str = "train"


@dataclass(frozen=True)
class SftRow:
    """One supervised example: a user turn and the answer to learn."""

    prompt_id: int
    question: str  # the user turn as the model will see it (may carry a SteerLM label)
    response: str
    completion_id: int | None = None
    scores: Scores = field(default_factory=dict)
    rater: str = ""
    label: str = ""  # SteerLM attribute string, when the strategy conditions on one
    split: str = "train"


@dataclass
class CurationResult:
    rows: list[PreferenceRow] | list[SftRow]
    kind: str  # "dpo" | "sft" | "steerlm"
    # Why prompts were dropped, counted: {"no pair with gap >= 2": 12, ...}
    dropped: dict[str, int] = field(default_factory=dict)
    # The resolved parameters the rows were made with (run_strategy fills it in), so that the
    # service records them without resolving them again.
    params: dict[str, Any] = field(default_factory=dict)
