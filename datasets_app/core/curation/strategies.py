"""Curation strategies: pure functions from rated prompts to dataset rows.

Every strategy has the signature `(prompts, params, selection, *, seed) -> CurationResult`
and is listed in STRATEGIES with its default parameters, the kind of rows it makes and a
one-line description. `run_strategy` validates the parameters, runs one, then applies the
common filters (filters.py). The service records the name, the resolved parameters, the
rater selection, the filters and the seed in the version; with them the rows can be rebuilt
exactly: randomness comes from `random.Random(f"{seed}:{prompt_id}")`, one per prompt, so a
prompt's row depends neither on the order of the prompts nor on the other prompts.

Scores in the rows are the combined scores of raters.combined_scores: floats under
combine="mean" (types.Scores says int; see raters.CombinedScores).

Dropped prompts are counted by reason in CurationResult.dropped (for `steerlm`, dropped
completions; for the filters, dropped rows).

Held-out prompts (a prompt's own split is "test" or "validation") are for evaluation:
`run_strategy`, which every entry point goes through, leaves them out of the pool before any
strategy sees it, and counts them. `include_heldout` (COMMON_PARAMS, taken by every
strategy and recorded with its parameters) is the only way to curate them, and then they
are training prompts like the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, NamedTuple, Protocol, cast

from datasets_app.core.curation.corruption import CORRUPT_TEMPLATE, oracle_corruption
from datasets_app.core.curation.filters import (
    Rows,
    apply_filters,
    check_filters,
    is_int,
    is_number,
    row_sort_key,
    unit_hash,
)
from datasets_app.core.curation.raters import (
    CombinedScores,
    RaterSelection,
    combined_scores,
    rater_sort_key,
)
from datasets_app.core.curation.types import (
    ATTRIBUTES,
    CurationResult,
    PreferenceRow,
    RatedCompletion,
    RatedPrompt,
    Scores,
    SftRow,
)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Seed 001 ranks completions by helpfulness + correctness + coherence.
SUM_ATTRIBUTES = ["helpfulness", "correctness", "coherence"]

# Seed 000 (section 4.2): rewrite only the long answers, concisely, strictly in one format,
# keeping the original facts. {prompt}, {response} and {letter} are filled in per item.
REFORMAT_TEMPLATE = """\
Rewrite the answer to this multiple-choice science question as a short chain of thought.
Keep only the reasoning that bears on this question and drop general background that does
not. Keep the facts of the original answer and do not add new ones. If its reasoning is
unsound, write sound reasoning that reaches the same answer. Use exactly this format and
stop after its last line:
Analysis: <two to four sentences>
The answer is {letter}.

Question:
{prompt}

Original answer:
{response}"""


class StrategyFn(Protocol):
    def __call__(
        self,
        prompts: Sequence[RatedPrompt],
        params: Mapping[str, Any],
        selection: RaterSelection,
        *,
        seed: int,
    ) -> CurationResult: ...


class Strategy(NamedTuple):
    function: StrategyFn
    defaults: dict[str, Any]
    kind: str  # "dpo" | "sft" | "steerlm"
    description: str


class _Scored(NamedTuple):
    completion: RatedCompletion
    scores: CombinedScores
    total: float


# --- scoring ------------------------------------------------------------------------------


def score_sum(
    scores: Mapping[str, float],
    attributes: Sequence[str],
    weights: Mapping[str, float] | None = None,
) -> float:
    """The (weighted) sum of `attributes`; weights default to 1."""
    weights = weights or {}
    # Rounded so that means (2 decimals) add up exactly: 3.33 + 3.33 + 3.34 == 10.
    return round(sum(scores[a] * weights.get(a, 1) for a in attributes), 6)


def _ranked(prompt: RatedPrompt, selection: RaterSelection, p: Mapping[str, Any]) -> list[_Scored]:
    """The completions rated on every summed attribute, best first, ties by lowest id."""
    scored = []
    for completion in prompt.completions:
        scores = combined_scores(completion, selection)
        if scores is not None and all(a in scores for a in p["attributes"]):
            total = score_sum(scores, p["attributes"], p["weights"])
            scored.append(_Scored(completion, scores, total))
    return sorted(scored, key=lambda s: (-s.total, s.completion.completion_id))


def _pair(
    prompt: RatedPrompt, chosen: _Scored, rejected: _Scored, margin: float, rater: str
) -> PreferenceRow:
    return PreferenceRow(
        prompt_id=prompt.prompt_id,
        question=prompt.question,
        chosen=chosen.completion.text,
        rejected=rejected.completion.text,
        chosen_id=chosen.completion.completion_id,
        rejected_id=rejected.completion.completion_id,
        chosen_scores=_as_scores(chosen.scores),
        rejected_scores=_as_scores(rejected.scores),
        margin=margin,
        rater=rater,
    )


def _as_scores(scores: CombinedScores | None) -> Scores:
    return dict(scores or {})


def _by_id(prompts: Sequence[RatedPrompt]) -> list[RatedPrompt]:
    return sorted(prompts, key=lambda p: p.prompt_id)


# --- DPO pairs ----------------------------------------------------------------------------


def _pairs_by_sum(
    prompts: Sequence[RatedPrompt],
    selection: RaterSelection,
    p: Mapping[str, Any],
    rejected_for: Callable[[RatedPrompt, list[Any]], tuple[Any | None, str]],
) -> CurationResult:
    """The loop both score-sum strategies share: rank each prompt's completions, take the
    best as chosen, and let `rejected_for` pick the rejected one (or say why there is none)."""
    rows: list[PreferenceRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        ranked = _ranked(prompt, selection, p)
        if len(ranked) < 2:
            dropped["fewer than 2 rated completions"] += 1
            continue
        best = ranked[0]
        rejected, reason = rejected_for(prompt, ranked)
        if rejected is None:
            dropped[reason] += 1
            continue
        margin = float(round(best.total - rejected.total, 6))
        rows.append(_pair(prompt, best, rejected, margin, selection.describe()))
    return CurationResult(rows=rows, kind="dpo", dropped=dict(dropped))


def best_vs_random_gap(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 001: chosen = the best sum, rejected = a random other one at least `gap` lower."""
    p = _params("best_vs_random_gap", params)

    def random_lower(prompt: RatedPrompt, ranked: list[Any]) -> tuple[Any | None, str]:
        best = ranked[0]
        lower = [s for s in ranked[1:] if round(best.total - s.total, 6) >= p["gap"]]
        if not lower:
            return None, f"no pair with gap >= {p['gap']:g}"
        # Reproducible sampling for a dataset, not security.
        rng = random.Random(f"{seed}:{prompt.prompt_id}")  # noqa: S311
        return rng.choice(sorted(lower, key=lambda s: s.completion.completion_id)), ""

    return _pairs_by_sum(prompts, selection, p, random_lower)


def best_vs_worst(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 003: the best and the worst by sum; prompts where they tie are dropped."""
    p = _params("best_vs_worst", params)

    def worst(prompt: RatedPrompt, ranked: list[Any]) -> tuple[Any | None, str]:
        lowest = min(ranked, key=lambda s: (s.total, s.completion.completion_id))
        if round(ranked[0].total - lowest.total, 6) == 0:
            return None, "best and worst tie"
        return lowest, ""

    return _pairs_by_sum(prompts, selection, p, worst)


def human_pick(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """The annotators' explicit chosen/rejected, by majority over (chosen, rejected) pairs.

    One vote per selected annotator (their last pick). A tie pick ("all equal") is a vote
    against every pair: the winning pair needs more votes than the tie picks, and more than
    any other pair. The margin is the winner's number of votes; `rater` names its voters.
    """
    _params("human_pick", params)
    rows: list[PreferenceRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        by_id = {c.completion_id: c for c in prompt.completions}
        last = {pick.annotator: pick for pick in prompt.picks if selection.counts(pick.annotator)}
        votes: dict[tuple[int, int], list[str]] = {}
        ties = 0
        for annotator in sorted(last, key=rater_sort_key):
            pick = last[annotator]
            if pick.tie:
                ties += 1
            elif (
                pick.chosen_id in by_id
                and pick.rejected_id in by_id
                and pick.chosen_id != pick.rejected_id
            ):
                pair = (cast(int, pick.chosen_id), cast(int, pick.rejected_id))
                votes.setdefault(pair, []).append(annotator)
            # else: an incomplete pick (no rejected, or a completion not of this prompt).
        if not votes and not ties:
            dropped["no picks"] += 1
            continue
        top = max((len(voters) for voters in votes.values()), default=0)
        leaders = [pair for pair, voters in votes.items() if len(voters) == top]
        if ties >= top:
            dropped["annotators judged the completions equal"] += 1
            continue
        if len(leaders) > 1:
            dropped["annotators disagree"] += 1
            continue
        chosen_id, rejected_id = leaders[0]
        chosen, rejected = by_id[chosen_id], by_id[rejected_id]
        rows.append(
            _pair(
                prompt,
                _Scored(chosen, combined_scores(chosen, selection) or {}, 0),
                _Scored(rejected, combined_scores(rejected, selection) or {}, 0),
                float(top),
                ",".join(votes[leaders[0]]),
            )
        )
    return CurationResult(rows=rows, kind="dpo", dropped=dict(dropped))


# --- SFT sets -----------------------------------------------------------------------------


def rejection_sampling(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 001: the top completion per prompt by score sum, among the good enough ones, as SFT.

    Good enough: correctness at least `min_correctness` (default 3 of 4: "mostly correct"
    on the HelpSteer scale; null turns it off) and, when `min_score` is set, a sum at least
    that. Without a floor, a prompt whose samples are all wrong would teach its least bad
    wrong answer. A prompt with rated completions but none good enough is dropped and
    counted ("no completion with correctness >= 3", or "best score below N").
    """
    p = _params("rejection_sampling", params)
    least = p["min_correctness"]
    rows: list[SftRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        ranked = _ranked(prompt, selection, p)
        if not ranked:
            dropped["no rated completion"] += 1
            continue
        if p["min_score"] is not None and ranked[0].total < p["min_score"]:
            dropped[f"best score below {p['min_score']:g}"] += 1
            continue
        # The sum ranks, correctness gates: the best of the correct ones, not the best sum
        # when that one is wrong. A completion not rated on correctness cannot pass.
        good = [
            s
            for s in ranked
            if (least is None or s.scores.get("correctness", -1) >= least)
            and (p["min_score"] is None or s.total >= p["min_score"])
        ]
        if not good:
            also = "" if p["min_score"] is None else f" and score >= {p['min_score']:g}"
            dropped[f"no completion with correctness >= {least:g}{also}"] += 1
            continue
        best = good[0]
        rows.append(
            SftRow(
                prompt_id=prompt.prompt_id,
                question=prompt.question,
                response=best.completion.text,
                completion_id=best.completion.completion_id,
                scores=_as_scores(best.scores),
                rater=selection.describe(),
            )
        )
    return CurationResult(rows=rows, kind="sft", dropped=dict(dropped))


# --- by a reward model's scalar (a reward:CHECKPOINT judge) ---------------------------------


def reward_key(prompts: Sequence[RatedPrompt], asked: str) -> str:
    """The reward judge to rank by: `asked` ("judge:9"), or the only one that scored any
    of these completions. ValueError when there is none, or several and none named."""
    present = sorted(
        {k for p in prompts for c in p.completions for k in c.rewards}, key=rater_sort_key
    )
    if asked:
        if asked not in present:
            raise ValueError(
                f"no completion here has a reward from {asked} "
                f"(rewards here: {', '.join(present) or 'none'})"
            )
        return asked
    if not present:
        raise ValueError(
            "no completion here has a reward: score them with a reward:CHECKPOINT judge first"
        )
    if len(present) > 1:
        raise ValueError(f"several reward judges scored these: name one ({', '.join(present)})")
    return present[0]


def _by_reward(prompt: RatedPrompt, key: str) -> list[tuple[RatedCompletion, float]]:
    """The completions the reward judge scored, best first, ties by lowest id."""
    scored = [(c, c.rewards[key]) for c in prompt.completions if key in c.rewards]
    return sorted(scored, key=lambda s: (-s[1], s[0].completion_id))


def reward_best_vs_worst(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Chosen: the highest reward; rejected: the lowest; pairs whose rewards differ by no
    more than `min_margin` are dropped. The margin is the reward difference (the reward
    model's own scale); the score columns carry the selected raters' scores, if any."""
    p = _params("reward_best_vs_worst", params)
    key = reward_key(prompts, p["reward"])
    rows: list[PreferenceRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        ranked = _by_reward(prompt, key)
        if len(ranked) < 2:
            dropped["fewer than 2 completions with a reward"] += 1
            continue
        (best, high), (worst, low) = ranked[0], ranked[-1]
        margin = float(round(high - low, 6))
        if margin <= p["min_margin"]:
            dropped[f"reward margin <= {p['min_margin']:g}"] += 1
            continue
        rows.append(
            PreferenceRow(
                prompt_id=prompt.prompt_id,
                question=prompt.question,
                chosen=best.text,
                rejected=worst.text,
                chosen_id=best.completion_id,
                rejected_id=worst.completion_id,
                chosen_scores=_as_scores(combined_scores(best, selection)),
                rejected_scores=_as_scores(combined_scores(worst, selection)),
                margin=margin,
                rater=key,
            )
        )
    return CurationResult(rows=rows, kind="dpo", dropped=dict(dropped))


def reward_best_of_n(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Rejection sampling by reward: SFT on each prompt's highest-reward completion, when
    its reward reaches `min_reward` (null: no floor)."""
    p = _params("reward_best_of_n", params)
    key = reward_key(prompts, p["reward"])
    rows: list[SftRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        ranked = _by_reward(prompt, key)
        if not ranked:
            dropped["no completion with a reward"] += 1
            continue
        best, reward = ranked[0]
        if p["min_reward"] is not None and reward < p["min_reward"]:
            dropped[f"best reward below {p['min_reward']:g}"] += 1
            continue
        rows.append(
            SftRow(
                prompt_id=prompt.prompt_id,
                question=prompt.question,
                response=best.text,
                completion_id=best.completion_id,
                scores=_as_scores(combined_scores(best, selection)),
                rater=key,
            )
        )
    return CurationResult(rows=rows, kind="sft", dropped=dict(dropped))


def steerlm_label(scores: Mapping[str, float]) -> str:
    """The HelpSteer attribute string: "helpfulness:4,correctness:3,...,verbosity:2".

    Means are rounded half up (3.5 -> 4), not to even as round() does.
    """
    parts = []
    for attribute in ATTRIBUTES:
        if attribute not in scores:
            raise ValueError(f"a SteerLM label needs all five attributes; {attribute} is missing")
        value = math.floor(scores[attribute] + 0.5)
        if not 0 <= value <= 4:
            raise ValueError(f"{attribute} {scores[attribute]} is outside 0-4")
        parts.append(f"{attribute}:{value}")
    return ",".join(parts)


def parse_steerlm_label(label: str) -> dict[str, int]:
    """Read an attribute string back, in HelpSteer order. Raises ValueError when malformed."""
    values: dict[str, int] = {}
    for part in label.split(","):
        name, sep, value = part.strip().partition(":")
        if not sep or name not in ATTRIBUTES or not re.fullmatch(r"[0-4]", value.strip()):
            raise ValueError(f"bad SteerLM label part {part!r} in {label!r}")
        if name in values:
            raise ValueError(f"{name} appears twice in SteerLM label {label!r}")
        values[name] = int(value)
    return {a: values[a] for a in ATTRIBUTES if a in values}


def steerlm(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Every completion rated on all five attributes, with its attribute string as `label`.

    `question` stays the plain question: the label belongs at the start of the assistant
    turn (NeMo-Aligner: `<extra_id_1>Assistant\\n<extra_id_2>{label}\\n{response}`), so the
    exporter/trainer inserts it there and masks it from the loss.
    """
    _params("steerlm", params)
    rows: list[SftRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        for completion in sorted(prompt.completions, key=lambda c: c.completion_id):
            scores = combined_scores(completion, selection)
            if scores is None or any(a not in scores for a in ATTRIBUTES):
                dropped["completion not rated on all five attributes"] += 1
                continue
            rows.append(
                SftRow(
                    prompt_id=prompt.prompt_id,
                    question=prompt.question,
                    response=completion.text,
                    completion_id=completion.completion_id,
                    scores=_as_scores(scores),
                    rater=selection.describe(),
                    label=steerlm_label(scores),
                )
            )
    return CurationResult(rows=rows, kind="steerlm", dropped=dict(dropped))


def judge_answer_sft(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 001 baseline: the judge's own answer (metadata "judge_answer") as the target."""
    _params("judge_answer_sft", params)
    rows: list[SftRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        answer = prompt.metadata.get("judge_answer")
        if not isinstance(answer, str) or not answer.strip():
            dropped["no judge answer"] += 1
            continue
        rows.append(
            SftRow(
                prompt_id=prompt.prompt_id,
                question=prompt.question,
                response=answer.strip(),
                rater="judge_answer",
            )
        )
    return CurationResult(rows=rows, kind="sft", dropped=dict(dropped))


def reference_sft(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Instruction tuning on each prompt's own answer: a multiple-choice prompt gets seed
    000's short target (its lettered options, "The answer is X."), any other prompt its
    reference answer (yes/no, a word, a description) under its question as written."""
    _params("reference_sft", params)
    rows: list[SftRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        index = prompt.answer_index
        if prompt.choices and index is not None and 0 <= index < len(prompt.choices):
            rows.append(_scienceqa_row(prompt, scienceqa_response(prompt, short=True), "reference"))
        elif prompt.reference_answer.strip():
            rows.append(
                SftRow(
                    prompt_id=prompt.prompt_id,
                    question=prompt.question,
                    response=prompt.reference_answer.strip(),
                    rater="reference",
                )
            )
        else:
            dropped["no reference answer"] += 1
    return CurationResult(rows=rows, kind="sft", dropped=dict(dropped))


def bdhs(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 002's BDHS pairs: chosen = the prompt's reference answer, rejected = the
    policy's own biased answer to it (a generation job with `bdhs` set); no rating, no
    judge. The first BDHS completion is taken when a prompt has several."""
    _params("bdhs", params)
    rows: list[PreferenceRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        reference = prompt.reference_answer.strip()
        made = [c for c in prompt.completions if c.method == "bdhs"]
        if not reference:
            dropped["no reference answer"] += 1
            continue
        if not made:
            dropped["no BDHS completion"] += 1
            continue
        rejected = min(made, key=lambda c: c.completion_id)
        if rejected.text.strip() == reference:
            dropped["the BDHS answer equals the reference"] += 1
            continue
        rows.append(
            PreferenceRow(
                prompt_id=prompt.prompt_id,
                question=prompt.question,
                chosen=reference,
                rejected=rejected.text,
                rejected_id=rejected.completion_id,
                rater="bdhs",
            )
        )
    return CurationResult(rows=rows, kind="dpo", dropped=dict(dropped))


KTO_DESIRABLE, KTO_UNDESIRABLE = "desirable", "undesirable"


def kto(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """KTO's unpaired examples (Ethayarajh et al. 2024), from per-attribute thresholds: a
    rated completion is desirable when every attribute in `desirable_min` reaches its
    minimum, undesirable when any attribute in `undesirable_max` is at or below its maximum
    (desirable wins where both hold), and left out otherwise. The row's `label` says which."""
    p = _params("kto", params)
    rows: list[SftRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        kept = 0
        for completion in sorted(prompt.completions, key=lambda c: c.completion_id):
            scores = combined_scores(completion, selection)
            needed = set(p["desirable_min"]) | set(p["undesirable_max"])
            if scores is None or any(a not in scores for a in needed):
                dropped["completion not rated on the thresholds' attributes"] += 1
                continue
            if all(scores[a] >= v for a, v in p["desirable_min"].items()):
                label = KTO_DESIRABLE
            elif any(scores[a] <= v for a, v in p["undesirable_max"].items()):
                label = KTO_UNDESIRABLE
            else:
                dropped["completion neither desirable nor undesirable"] += 1
                continue
            kept += 1
            rows.append(
                SftRow(
                    prompt_id=prompt.prompt_id,
                    question=prompt.question,
                    response=completion.text,
                    completion_id=completion.completion_id,
                    scores=_as_scores(scores),
                    rater=selection.describe(),
                    label=label,
                )
            )
        if not prompt.completions:
            dropped["no completion"] += 1
    return CurationResult(rows=rows, kind="kto", dropped=dict(dropped))


def corrupted(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """POVID-style pairs (seed 002, section 3.3): chosen = the reference answer, rejected =
    the same answer made wrong in one fact. With `rewrite` (a judge, each call kept), the
    judge writes the hallucination from `corrupt_template`; without, the free oracle
    corruption swaps one colour, count, shape, side or yes/no (core/curation/corruption.py),
    and a prompt whose answer has none of them is dropped."""
    p = _params("corrupted", params)
    rewrite: Callable[[str], str] | None = p["rewrite"]
    rows: list[PreferenceRow] = []
    dropped: Counter[str] = Counter()
    for prompt in _by_id(prompts):
        reference = prompt.reference_answer.strip()
        if not reference:
            dropped["no reference answer"] += 1
            continue
        if rewrite is not None:
            instruction = p["corrupt_template"].format(question=prompt.question, answer=reference)
            rejected: str | None = rewrite(instruction).strip()
            rater = "rewrite"
        else:
            rng = random.Random(f"{seed}:{prompt.prompt_id}")  # noqa: S311 - a dataset
            rejected = oracle_corruption(reference, rng)
            rater = "oracle_corruption"
        if not rejected:
            dropped["nothing in the answer to corrupt"] += 1
            continue
        if rejected == reference:
            dropped["the corruption left the answer as it was"] += 1
            continue
        rows.append(
            PreferenceRow(
                prompt_id=prompt.prompt_id,
                question=prompt.question,
                chosen=reference,
                rejected=rejected,
                rater=rater,
            )
        )
    return CurationResult(rows=rows, kind="dpo", dropped=dict(dropped))


# --- ScienceQA sets (seed 000) ------------------------------------------------------------


def scienceqa_prompt(prompt: RatedPrompt) -> str:
    """The user turn: "Context: {hint}" (when there is one), the question, lettered options.

    The layout of the lmms-eval ScienceQA-IMG prompt (without its closing instruction), so
    that training and evaluation see the same text.
    """
    lines = [f"Context: {prompt.hint}"] if prompt.hint else []
    lines.append(prompt.question)
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(prompt.choices)]
    return "\n".join(lines)


def scienceqa_response(prompt: RatedPrompt, *, short: bool = False) -> str:
    """The LLaVA-style target: lecture, solution, "The answer is X." (short: the last only)."""
    answer = f"The answer is {LETTERS[cast(int, prompt.answer_index)]}."
    if short:
        return answer
    lecture = str(prompt.metadata.get("lecture") or "").strip()
    solution = str(prompt.metadata.get("solution") or "").strip()
    return "\n".join(part for part in (lecture, solution, answer) if part)


def _scienceqa_items(
    prompts: Sequence[RatedPrompt], subsample: int | None, seed: int, dropped: Counter[str]
) -> list[RatedPrompt]:
    items = []
    for prompt in _by_id(prompts):
        index = prompt.answer_index
        if index is not None and 0 <= index < len(prompt.choices) <= len(LETTERS):
            items.append(prompt)
        else:
            dropped["not a ScienceQA item (choices and answer)"] += 1
    if subsample is not None and len(items) > subsample:
        # Before any rewriting, so that a mini set pays only for its own items. Salted apart
        # from the eval split (see filters.unit_hash).
        ranked = sorted(items, key=lambda q: unit_hash("subsample", seed, q.prompt_id))
        dropped["subsampled out"] += len(items) - subsample
        items = _by_id(ranked[:subsample])
    return items


def _scienceqa_row(prompt: RatedPrompt, response: str, rater: str = "") -> SftRow:
    return SftRow(
        prompt_id=prompt.prompt_id,
        question=scienceqa_prompt(prompt),
        response=response,
        rater=rater,
    )


def scienceqa_full(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 000 full-origin: question + context + options -> lecture + solution + answer."""
    p = _params("scienceqa_full", params)
    dropped: Counter[str] = Counter()
    items = _scienceqa_items(prompts, p["subsample"], seed, dropped)
    rows = [_scienceqa_row(q, scienceqa_response(q)) for q in items]
    return CurationResult(rows=rows, kind="sft", dropped=dict(dropped))


def scienceqa_short(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 000 short: the same prompt, answered "The answer is X." only."""
    p = _params("scienceqa_short", params)
    dropped: Counter[str] = Counter()
    items = _scienceqa_items(prompts, p["subsample"], seed, dropped)
    rows = [_scienceqa_row(q, scienceqa_response(q, short=True)) for q in items]
    return CurationResult(rows=rows, kind="sft", dropped=dict(dropped))


def scienceqa_reformatted(
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any],
    selection: RaterSelection,
    *,
    seed: int,
) -> CurationResult:
    """Seed 000 realign: full responses longer than `max_chars` rewritten into `template`.

    `rewrite` (str -> str, e.g. an LLM call) gets the filled template and returns the new
    answer. A rewrite that no longer ends on the right "The answer is X" is dropped: the
    seed saw the rewriting model stray from the template.
    """
    p = _params("scienceqa_reformatted", params)
    rewrite: Callable[[str], str] = p["rewrite"]
    dropped: Counter[str] = Counter()
    rows = []
    for item in _scienceqa_items(prompts, p["subsample"], seed, dropped):
        response = scienceqa_response(item)
        if len(response) <= p["max_chars"]:
            rows.append(_scienceqa_row(item, response))
            continue
        letter = LETTERS[cast(int, item.answer_index)]
        instruction = p["template"].format(
            prompt=scienceqa_prompt(item), response=response, letter=letter
        )
        rewritten = rewrite(instruction).strip()
        answers = re.findall(r"The answer is \(?([A-Z])\b", rewritten)
        if not answers or answers[-1] != letter:
            dropped["rewrite changed or lost the answer"] += 1
            continue
        rows.append(_scienceqa_row(item, rewritten, rater="rewrite"))
    return CurationResult(rows=rows, kind="sft", dropped=dict(dropped))


# --- the list, parameters, running ----------------------------------------------------------

_SUM = {"attributes": SUM_ATTRIBUTES, "weights": None}

STRATEGIES: dict[str, Strategy] = {
    "best_vs_random_gap": Strategy(
        best_vs_random_gap,
        {**_SUM, "gap": 2},
        "dpo",
        "Chosen: best score sum; rejected: a random other one at least `gap` lower (seed 001).",
    ),
    "best_vs_worst": Strategy(
        best_vs_worst,
        dict(_SUM),
        "dpo",
        "Chosen: best score sum; rejected: worst; prompts where they tie dropped (seed 003).",
    ),
    "bdhs": Strategy(
        bdhs,
        {},
        "dpo",
        "Chosen: the reference answer; rejected: the policy's own answer with the image "
        "masked and guided by the reference (BDHS, seed 002). No judge.",
    ),
    "kto": Strategy(
        kto,
        {
            "desirable_min": {"correctness": 3, "helpfulness": 3},
            "undesirable_max": {"correctness": 1},
        },
        "kto",
        "KTO's unpaired examples: desirable when every `desirable_min` attribute reaches its "
        "minimum, undesirable when any `undesirable_max` attribute is at or below its maximum.",
    ),
    "corrupted": Strategy(
        corrupted,
        {"rewrite": None, "corrupt_template": CORRUPT_TEMPLATE},
        "dpo",
        "Chosen: the reference answer; rejected: it with one fact made wrong, by a judge's "
        "rewrite or, free, by swapping a colour/count/shape/side/yes-no (POVID-style).",
    ),
    "human_pick": Strategy(
        human_pick,
        {},
        "dpo",
        "The annotators' own chosen/rejected, by majority vote; ties and splits dropped.",
    ),
    "rejection_sampling": Strategy(
        rejection_sampling,
        {**_SUM, "min_score": None, "min_correctness": 3},
        "sft",
        "SFT on the top completion per prompt by score sum, among those with correctness >= "
        "`min_correctness` (3) (seed 001).",
    ),
    "reward_best_vs_worst": Strategy(
        reward_best_vs_worst,
        {"reward": "", "min_margin": 0.0},
        "dpo",
        "Chosen: the highest reward of a reward:CHECKPOINT judge (`reward`: which, when "
        "several scored); rejected: the lowest; margins <= `min_margin` dropped.",
    ),
    "reward_best_of_n": Strategy(
        reward_best_of_n,
        {"reward": "", "min_reward": None},
        "sft",
        "SFT on each prompt's highest-reward completion (best-of-N by a reward model), "
        "with an optional floor `min_reward`.",
    ),
    "steerlm": Strategy(
        steerlm,
        {},
        "steerlm",
        "SFT on every rated completion, conditioned on its HelpSteer attribute string.",
    ),
    "judge_answer_sft": Strategy(
        judge_answer_sft,
        {},
        "sft",
        "SFT on the judge's own answer to each prompt (seed 001 baseline).",
    ),
    "reference_sft": Strategy(
        reference_sft,
        # "": each question as its completions were asked (else as written); a generation
        # template's name asks every question without options that way (GRPO samples
        # answers to these prompts, so they must be asked as evaluation asks them).
        {"ask_as": ""},
        "sft",
        "SFT on each prompt's own answer: the reference, or 'The answer is X.' for options.",
    ),
    "scienceqa_full": Strategy(
        scienceqa_full,
        {"subsample": None},
        "sft",
        "ScienceQA: lecture + solution + 'The answer is X.' (seed 000 full/mini-origin).",
    ),
    "scienceqa_short": Strategy(
        scienceqa_short,
        {"subsample": None},
        "sft",
        "ScienceQA: 'The answer is X.' only (seed 000 full/mini-short).",
    ),
    "scienceqa_reformatted": Strategy(
        scienceqa_reformatted,
        {"subsample": None, "max_chars": 200, "template": REFORMAT_TEMPLATE, "rewrite": None},
        "sft",
        "ScienceQA with answers over `max_chars` rewritten by an LLM (seed 000 mini-realign).",
    ),
}


# Parameters every strategy takes, on top of its own defaults.
COMMON_PARAMS: dict[str, Any] = {
    # Curate prompts whose own split is test or validation too (as training prompts).
    "include_heldout": False,
}
HELD_OUT_REASON = "held-out prompt (test/validation split; include_heldout to curate it)"


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; strategies are {', '.join(STRATEGIES)}"
        ) from None


class ResolvedParams(dict[str, Any]):
    """A strategy's parameters as `resolve_params` returns them: defaults filled in, checked.

    A strategy given the ones resolved for it uses them as they are, so that a build resolves
    once (in `run_strategy`) while a strategy called on its own still gets its defaults."""

    __slots__ = ("strategy",)

    def __init__(self, strategy: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.strategy = strategy


def _params(name: str, params: Mapping[str, Any] | None) -> ResolvedParams:
    if isinstance(params, ResolvedParams) and params.strategy == name:
        return params
    return resolve_params(name, params)


def resolve_params(name: str, params: Mapping[str, Any] | None = None) -> ResolvedParams:
    """The strategy's defaults updated with `params`, validated. Raises ValueError."""
    own = get_strategy(name).defaults
    defaults = {**own, **COMMON_PARAMS}
    params = params or {}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        known = ", ".join(own) or "none"
        raise ValueError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; known: {known} "
            f"(and {', '.join(COMMON_PARAMS)}, which every strategy takes)"
        )
    resolved = {
        key: _check_param(name, key, value) for key, value in {**defaults, **params}.items()
    }
    if resolved.get("weights"):
        extra = sorted(set(resolved["weights"]) - set(resolved["attributes"]))
        if extra:
            raise ValueError(f"{name}: weights for attributes not summed: {', '.join(extra)}")
    if name == "scienceqa_reformatted" and resolved["rewrite"] is None:
        raise ValueError(f"{name}: needs a `rewrite` callable (str -> str) to rewrite long answers")
    return ResolvedParams(name, resolved)


def _check_param(name: str, key: str, value: Any) -> Any:
    def bad(expected: str) -> ValueError:
        return ValueError(f"{name}: {key} must be {expected}, not {value!r}")

    if key == "attributes":
        if (
            not isinstance(value, list | tuple)
            or not value
            or any(a not in ATTRIBUTES for a in value)
            or len(set(value)) != len(value)
        ):
            raise bad(f"a non-empty list of distinct attributes from {', '.join(ATTRIBUTES)}")
        return list(value)
    if key == "weights":
        if value is None:
            return None
        if not isinstance(value, dict) or not all(is_number(w) for w in value.values()):
            raise bad("a dict of attribute -> number, or null")
        return dict(value)
    if key == "gap":
        if not is_number(value) or value < 0:
            raise bad("a number >= 0")
        return value
    if key == "min_score":
        if value is not None and not is_number(value):
            raise bad("a number or null")
        return value
    if key == "min_correctness":
        if value is not None and (not is_number(value) or not 0 <= value <= 4):
            raise bad("a number from 0 to 4, or null")
        return value
    if key == "reward":
        if not isinstance(value, str) or (value and not re.fullmatch(r"judge:\d+", value)):
            raise bad('a reward judge\'s key, "judge:ID", or "" for the only one')
        return value
    if key == "min_margin":
        if not is_number(value) or value < 0:
            raise bad("a number >= 0")
        return float(value)
    if key == "min_reward":
        if value is not None and not is_number(value):
            raise bad("a number or null")
        return value
    if key == "include_heldout":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key in ("subsample", "max_chars"):
        if (value is None and key == "subsample") or (is_int(value) and value >= 1):
            return value
        raise bad("an integer >= 1" + (" or null" if key == "subsample" else ""))
    if key == "template":
        try:
            filled = value.format(prompt="", response="\0", letter="")
        except (AttributeError, KeyError, IndexError, ValueError):
            raise bad("text with only {prompt}, {response} and {letter} placeholders") from None
        if "\0" not in filled:
            raise bad("a template with a {response} placeholder")
        return value
    if key == "ask_as":
        from training.core.generation.templates import TEMPLATES

        if value != "" and value not in TEMPLATES:
            raise bad(f"'' or a prompt template ({', '.join(sorted(TEMPLATES))})")
        return value
    if key == "rewrite":
        if value is not None and not callable(value):
            raise bad("a callable str -> str")
        return value
    if key in ("desirable_min", "undesirable_max"):
        if (
            not isinstance(value, dict)
            or not value
            or any(a not in ATTRIBUTES for a in value)
            or not all(is_number(v) and 0 <= v <= 4 for v in value.values())
        ):
            raise bad(f"a non-empty dict of attribute ({', '.join(ATTRIBUTES)}) -> score 0-4")
        return dict(value)
    if key == "corrupt_template":
        try:
            filled = value.format(question="", answer="\0")
        except (AttributeError, KeyError, IndexError, ValueError):
            raise bad("text with only {question} and {answer} placeholders") from None
        if "\0" not in filled:
            raise bad("a template with an {answer} placeholder")
        return value
    return value


def run_strategy(
    name: str,
    prompts: Sequence[RatedPrompt],
    params: Mapping[str, Any] | None,
    selection: RaterSelection,
    filters: Mapping[str, Any] | None,
    seed: int,
) -> CurationResult:
    """Validate everything first, then run the strategy and the filters.

    Held-out prompts are left out first (unless `include_heldout`), so that no strategy can
    put them in a row, and the eval split (`eval_fraction`) is drawn among the rest.
    The rows come back in the canonical order (split, prompt, completion ids).
    """
    strategy = get_strategy(name)
    resolved = _params(name, params)  # resolved once: the caller may have done it
    filters = dict(filters or {})
    check_filters(filters, strategy.kind)
    pool = [p for p in prompts if resolved["include_heldout"] or p.split == "train"]
    result = strategy.function(pool, resolved, selection, seed=seed)
    rows, filter_drops = apply_filters(result.rows, filters, seed)
    dropped = Counter(result.dropped)
    if len(pool) < len(prompts):
        dropped[HELD_OUT_REASON] += len(prompts) - len(pool)
    dropped.update(filter_drops)
    return CurationResult(rows=rows, kind=strategy.kind, dropped=dict(dropped), params=resolved)


def row_checksum(rows: Rows) -> str:
    """sha256 over a canonical JSON of the rows, sorted by (split, prompt, completion ids)."""
    encoded = sorted(
        (row_sort_key(row), json.dumps(asdict(row), sort_keys=True, ensure_ascii=False))
        for row in rows
    )
    payload = "[" + ",".join(text for _, text in encoded) + "]"
    return hashlib.sha256(payload.encode()).hexdigest()
