"""The pure curation core: strategies, rater selection, filters, split, checksums. No database.

Every expected row below was worked out by hand from the fixture next to it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets_app.core.curation import (
    STRATEGIES,
    Pick,
    PreferenceRow,
    RatedCompletion,
    RatedPrompt,
    RaterSelection,
    SftRow,
    apply_filters,
    combined_scores,
    parse_steerlm_label,
    resolve_params,
    row_checksum,
    run_strategy,
    steerlm_label,
)
from datasets_app.core.curation.strategies import (
    best_vs_random_gap,
    best_vs_worst,
    human_pick,
    judge_answer_sft,
    rejection_sampling,
    scienceqa_full,
    scienceqa_reformatted,
    scienceqa_short,
    steerlm,
)

ROOT = Path(__file__).resolve().parents[1]
JUDGE = RaterSelection(kinds=("judge",))
USERS = RaterSelection(kinds=("user",))
ANY = RaterSelection()


def s(h, c, coh, cx=2, v=2):
    return {
        "helpfulness": h,
        "correctness": c,
        "coherence": coh,
        "complexity": cx,
        "verbosity": v,
    }


def judged(completion_id, scores, text=None):
    return RatedCompletion(completion_id, text or f"answer {completion_id}", {"judge:1": scores})


def prompt(prompt_id, *completions, **extra):
    return RatedPrompt(
        prompt_id, source_id=1, question=f"question {prompt_id}", completions=completions, **extra
    )


# Sums of helpfulness + correctness + coherence (judge:1) in the comments.
P1 = prompt(
    1,
    judged(11, s(4, 4, 4)),  # 12: best
    judged(12, s(4, 4, 3)),  # 11: only 1 lower
    judged(13, s(3, 3, 3, 1, 1)),  # 9: the only one >= 2 lower
    judged(14, s(4, 4, 4, 2, 3)),  # 12: ties with 11, loses on id
)
P2 = prompt(2, judged(21, s(3, 3, 3)), judged(22, s(3, 3, 2)))  # 9 vs 8
P3 = prompt(3, judged(31, s(4, 4, 4)), RatedCompletion(32, "unrated"))
P4 = prompt(4, judged(41, s(3, 3, 3)), judged(42, s(3, 3, 3)))  # all tie
P5 = prompt(5, judged(51, s(4, 4, 4)), judged(52, s(2, 2, 2)), judged(53, s(1, 1, 1)))


def pairs(result):
    return [(r.prompt_id, r.chosen_id, r.rejected_id, r.margin) for r in result.rows]


# --- best_vs_random_gap -------------------------------------------------------------------


def test_best_vs_random_gap_rows_and_drops():
    result = best_vs_random_gap([P1, P2, P3], {}, JUDGE, seed=0)
    assert pairs(result) == [(1, 11, 13, 3.0)]
    row = result.rows[0]
    assert (row.chosen, row.rejected, row.question) == ("answer 11", "answer 13", "question 1")
    assert row.chosen_scores == s(4, 4, 4) and row.rejected_scores == s(3, 3, 3, 1, 1)
    assert row.rater == "mean:judge" and row.split == "train"
    assert result.kind == "dpo"
    assert result.dropped == {"no pair with gap >= 2": 1, "fewer than 2 rated completions": 1}


def test_best_vs_random_gap_parameters():
    # gap 1: 12 (11) and 13 (9) qualify; gap 4: none does.
    assert best_vs_random_gap([P1], {"gap": 4}, JUDGE, seed=0).dropped == {
        "no pair with gap >= 4": 1
    }
    # Weighted: 11 -> 4+8+4=16, 12 -> 15, 13 -> 12: only 13 is >= 2 lower, margin 4.
    weighted = best_vs_random_gap([P1], {"weights": {"correctness": 2}}, JUDGE, seed=0)
    assert pairs(weighted) == [(1, 11, 13, 4.0)]
    # Summing verbosity alone: 14 (3) beats the rest (2, 2, 1); gap 2 leaves 13.
    verbose = best_vs_random_gap([P1], {"attributes": ["verbosity"]}, JUDGE, seed=0)
    assert pairs(verbose) == [(1, 14, 13, 2.0)]


def test_best_vs_random_gap_is_random_but_seeded_per_prompt():
    # P5: 51 (12) is chosen; 52 (6) and 53 (3) both qualify.
    rejected = {seed: best_vs_random_gap([P5], {}, JUDGE, seed=seed).rows[0] for seed in range(20)}
    assert {row.rejected_id for row in rejected.values()} == {52, 53}
    for seed, row in rejected.items():
        again = best_vs_random_gap([P4, P1, P5, P2], {}, JUDGE, seed=seed)
        assert again.rows[-1] == row  # same draw with other prompts around it
        assert row.margin == {52: 6.0, 53: 9.0}[row.rejected_id]


def test_results_do_not_depend_on_prompt_order():
    forward = run_strategy("best_vs_random_gap", [P1, P2, P3, P5], {}, JUDGE, {}, 7)
    backward = run_strategy("best_vs_random_gap", [P5, P3, P2, P1], {}, JUDGE, {}, 7)
    assert forward == backward
    assert row_checksum(forward.rows) == row_checksum(backward.rows)


@settings(max_examples=200, deadline=None)
@given(
    prompt_scores=st.lists(
        st.lists(st.tuples(*[st.integers(0, 4)] * 5), min_size=0, max_size=5),
        min_size=1,
        max_size=6,
    ),
    gap=st.one_of(st.integers(0, 8), st.floats(0, 8)),
    seed=st.integers(0, 1000),
)
def test_best_vs_random_gap_never_breaks_its_gap(prompt_scores, gap, seed):
    prompts = [
        prompt(i, *(judged(10 * i + j, s(*t)) for j, t in enumerate(scores)))
        for i, scores in enumerate(prompt_scores)
    ]
    result = best_vs_random_gap(prompts, {"gap": gap}, JUDGE, seed=seed)
    assert len(result.rows) + sum(result.dropped.values()) == len(prompts)
    for row in result.rows:
        assert row.chosen_id != row.rejected_id
        assert row.margin >= gap
        total = {
            c: sum(sc[a] for a in ("helpfulness", "correctness", "coherence"))
            for c, sc in (
                (row.chosen_id, row.chosen_scores),
                (row.rejected_id, row.rejected_scores),
            )
        }
        assert row.margin == total[row.chosen_id] - total[row.rejected_id]
        best = max(
            sum(c.ratings["judge:1"][a] for a in ("helpfulness", "correctness", "coherence"))
            for c in prompts[row.prompt_id].completions
        )
        assert total[row.chosen_id] == best


# --- best_vs_worst ------------------------------------------------------------------------


def test_best_vs_worst_rows_and_drops():
    result = best_vs_worst([P1, P2, P3, P4], {}, JUDGE, seed=0)
    assert pairs(result) == [(1, 11, 13, 3.0), (2, 21, 22, 1.0)]
    assert result.dropped == {"fewer than 2 rated completions": 1, "best and worst tie": 1}


# --- rater selection ----------------------------------------------------------------------

DISPUTED = RatedCompletion(
    1,
    "disputed",
    {
        "judge:1": s(4, 4, 4, 2, 2),
        "user:7": s(2, 3, 4, 1, 1),
        "user:8": s(3, 3, 3, 2, 2),
        "resolution:9": s(1, 1, 1, 1, 1),
    },
)


def test_rater_selection_judge_only_and_humans_only():
    assert combined_scores(DISPUTED, JUDGE) == s(4, 4, 4, 2, 2)
    assert combined_scores(DISPUTED, USERS) == s(2.5, 3.0, 3.5, 1.5, 1.5)
    only_user_8 = RaterSelection(raters=("user:8",), kinds=("user",))
    assert combined_scores(DISPUTED, only_user_8) == s(3, 3, 3, 2, 2)


def test_rater_selection_mean_of_judges_and_users():
    mean = RaterSelection(kinds=("judge", "user"))
    # helpfulness (4+2+3)/3, correctness (4+3+3)/3, coherence (4+4+3)/3, ... to 2 decimals
    assert combined_scores(DISPUTED, mean) == s(3.0, 3.33, 3.67, 1.67, 1.67)
    assert all(isinstance(v, float) for v in combined_scores(DISPUTED, JUDGE).values())


def test_rater_selection_precedence():
    listed = RaterSelection(
        raters=("user:8", "judge:1"), kinds=("judge", "user"), combine="precedence"
    )
    assert combined_scores(DISPUTED, listed) == s(3, 3, 3, 2, 2)
    # Without raters: kinds order, then the lowest id.
    by_kind = RaterSelection(kinds=("user", "judge"), combine="precedence")
    assert combined_scores(DISPUTED, by_kind) == s(2, 3, 4, 1, 1)
    # The first listed rater that did not rate it is skipped.
    absent_first = RaterSelection(
        raters=("judge:5", "judge:1"), kinds=("judge",), combine="precedence"
    )
    assert combined_scores(DISPUTED, absent_first) == s(4, 4, 4, 2, 2)


def test_a_resolution_wins_when_kinds_include_it():
    for combine in ("mean", "precedence"):
        assert combined_scores(DISPUTED, RaterSelection(combine=combine)) == s(1, 1, 1, 1, 1)
        explicit = RaterSelection(raters=("judge:1",), combine=combine)
        assert combined_scores(DISPUTED, explicit) == s(1, 1, 1, 1, 1)
    no_resolutions = RaterSelection(raters=("judge:1",), kinds=("judge", "user"))
    assert combined_scores(DISPUTED, no_resolutions) == s(4, 4, 4, 2, 2)


def test_no_selected_rating_gives_none_and_means_skip_missing_attributes():
    assert combined_scores(RatedCompletion(1, "x", {"judge:1": s(1, 1, 1)}), USERS) is None
    partial = RatedCompletion(1, "x", {"user:1": {"helpfulness": 4}, "user:2": s(2, 2, 2)})
    assert combined_scores(partial, USERS) == s(3.0, 2.0, 2.0, 2.0, 2.0)


def test_rater_selection_changes_the_pairs():
    split = prompt(
        6,
        RatedCompletion(61, "a", {"judge:1": s(4, 4, 4), "user:7": s(1, 1, 1)}),
        RatedCompletion(62, "b", {"judge:1": s(1, 1, 1), "user:7": s(4, 4, 4)}),
    )
    assert pairs(best_vs_random_gap([split], {}, JUDGE, seed=0)) == [(6, 61, 62, 9.0)]
    assert pairs(best_vs_random_gap([split], {}, USERS, seed=0)) == [(6, 62, 61, 9.0)]
    # The mean makes both 7.5 each: nothing to learn from.
    assert best_vs_random_gap([split], {}, ANY, seed=0).dropped == {"no pair with gap >= 2": 1}


def test_rater_selection_validation_and_round_trip():
    with pytest.raises(ValueError, match="combine"):
        RaterSelection(combine="median")
    with pytest.raises(ValueError, match="unknown rater kind"):
        RaterSelection(kinds=("bot",))
    with pytest.raises(ValueError, match="resolutions are selected"):
        RaterSelection(raters=("resolution:9",))
    with pytest.raises(ValueError, match="kinds leaves out"):
        RaterSelection(raters=("user:7",), kinds=("judge",))
    with pytest.raises(ValueError, match="unknown rater selection field"):
        RaterSelection.from_dict({"raters": [], "who": 1})
    selection = RaterSelection(raters=("user:8", "judge:1"), combine="precedence")
    assert selection.to_dict() == {
        "raters": ["user:8", "judge:1"],
        "kinds": ["judge", "user", "resolution", "import"],
        "combine": "precedence",
    }
    assert RaterSelection.from_dict(selection.to_dict()) == selection
    assert selection.describe() == "precedence:user:8>judge:1;resolution"


# --- human_pick ---------------------------------------------------------------------------


def picked(prompt_id, ids, *picks):
    completions = [RatedCompletion(i, f"answer {i}") for i in ids]
    return prompt(prompt_id, *completions, picks=tuple(picks))


def test_human_pick_majority_and_drops():
    prompts = [
        picked(7, (71, 72), Pick("user:1", 71, 72), Pick("user:2", 71, 72), Pick("user:3", 72, 71)),
        picked(8, (81, 82), Pick("user:1", 81, 82), Pick("user:2", 82, 81)),
        picked(9, (91, 92), Pick("user:1", 91, 92), Pick("user:2", None, None, tie=True)),
        picked(10, (101, 102)),
        picked(
            11,
            (111, 112),
            Pick("user:1", 111, 112),
            Pick("user:2", 111, 112),
            Pick("user:3", None, None, tie=True),
        ),
        picked(12, (121, 122), Pick("user:1", 121, None), Pick("user:2", 121, 999)),
    ]
    result = human_pick(prompts, {}, ANY, seed=0)
    assert pairs(result) == [(7, 71, 72, 2.0), (11, 111, 112, 2.0)]
    assert [row.rater for row in result.rows] == ["user:1,user:2", "user:1,user:2"]
    assert result.dropped == {
        "annotators disagree": 1,
        "annotators judged the completions equal": 1,
        "no picks": 2,  # none at all; only incomplete ones
    }


def test_human_pick_one_vote_per_annotator_and_selection():
    changed_mind = picked(7, (71, 72), Pick("user:1", 71, 72), Pick("user:1", 72, 71))
    assert pairs(human_pick([changed_mind], {}, ANY, seed=0)) == [(7, 72, 71, 1.0)]
    three = picked(
        7, (71, 72), Pick("user:1", 71, 72), Pick("user:2", 71, 72), Pick("user:3", 72, 71)
    )
    only_3 = RaterSelection(raters=("user:3",), kinds=("user",))
    assert pairs(human_pick([three], {}, only_3, seed=0)) == [(7, 72, 71, 1.0)]
    assert human_pick([three], {}, JUDGE, seed=0).dropped == {"no picks": 1}


def test_human_pick_carries_the_combined_scores():
    scored = prompt(
        7,
        RatedCompletion(71, "a", {"judge:1": s(4, 4, 4)}),
        RatedCompletion(72, "b"),
        picks=(Pick("user:1", 71, 72),),
    )
    row = human_pick([scored], {}, ANY, seed=0).rows[0]
    assert row.chosen_scores == s(4, 4, 4) and row.rejected_scores == {}


# --- SFT strategies -----------------------------------------------------------------------


def test_rejection_sampling():
    result = rejection_sampling([P1, P2, P3, prompt(9)], {}, JUDGE, seed=0)
    assert [(r.prompt_id, r.completion_id, r.response) for r in result.rows] == [
        (1, 11, "answer 11"),
        (2, 21, "answer 21"),
        (3, 31, "answer 31"),
    ]
    assert result.rows[0].scores == s(4, 4, 4) and result.rows[0].label == ""
    assert result.dropped == {"no rated completion": 1}
    strict = rejection_sampling([P1, P2, P3], {"min_score": 12}, JUDGE, seed=0)
    assert [r.completion_id for r in strict.rows] == [11, 31]
    assert strict.dropped == {"best score below 12": 1}


def test_rejection_sampling_keeps_no_wrong_answer_by_default():
    """Issue 12 point 8: the best sum may be wrong; correctness >= 3 gates, the sum ranks."""
    wrong_but_fluent = prompt(
        6,
        judged(61, s(4, 0, 4, 4, 4)),  # sum 8, correctness 0
        judged(62, s(2, 3, 2)),  # sum 7, mostly correct: kept
    )
    all_wrong = prompt(7, judged(71, s(4, 2, 4)), judged(72, s(1, 0, 1)))
    result = rejection_sampling([wrong_but_fluent, all_wrong], {}, JUDGE, seed=0)
    assert [(r.prompt_id, r.completion_id) for r in result.rows] == [(6, 62)]
    assert result.dropped == {"no completion with correctness >= 3": 1}
    assert all(r.scores["correctness"] >= 3 for r in result.rows)
    off = rejection_sampling(
        [wrong_but_fluent, all_wrong], {"min_correctness": None}, JUDGE, seed=0
    )
    assert [r.completion_id for r in off.rows] == [61, 71]
    both = rejection_sampling(
        [wrong_but_fluent, P1], {"min_correctness": 4, "min_score": 11}, JUDGE, seed=0
    )
    assert [r.completion_id for r in both.rows] == [11]
    assert both.dropped == {"best score below 11": 1}
    assert resolve_params("rejection_sampling")["min_correctness"] == 3
    for bad in (5, -1, "3", True):
        with pytest.raises(ValueError, match="min_correctness must be a number from 0 to 4"):
            resolve_params("rejection_sampling", {"min_correctness": bad})


def test_steerlm_rows_labels_and_drops():
    half = RatedCompletion(15, "half", {"user:1": s(2, 3, 4, 1, 0), "user:2": s(3, 3, 4, 2, 0)})
    missing = RatedCompletion(16, "missing", {"judge:1": {"helpfulness": 4}})
    p = prompt(1, *P1.completions, half, missing)
    result = steerlm([p], {}, ANY, seed=0)
    assert result.kind == "steerlm"
    assert [(r.completion_id, r.label) for r in result.rows] == [
        (11, "helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:2"),
        (12, "helpfulness:4,correctness:4,coherence:3,complexity:2,verbosity:2"),
        (13, "helpfulness:3,correctness:3,coherence:3,complexity:1,verbosity:1"),
        (14, "helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:3"),
        # means 2.5 and 1.5 round half up
        (15, "helpfulness:3,correctness:3,coherence:4,complexity:2,verbosity:0"),
    ]
    assert all(r.question == "question 1" for r in result.rows)  # the label is not in it
    assert result.dropped == {"completion not rated on all five attributes": 1}


def test_steerlm_label_round_trip_and_errors():
    scores = s(4, 3, 4, 2, 2)
    label = steerlm_label(scores)
    assert label == "helpfulness:4,correctness:3,coherence:4,complexity:2,verbosity:2"
    assert parse_steerlm_label(label) == scores
    assert list(parse_steerlm_label("verbosity:1, helpfulness:2")) == ["helpfulness", "verbosity"]
    for bad in ("helpfulness:5", "humour:1", "helpfulness4", "helpfulness:1,helpfulness:2", ""):
        with pytest.raises(ValueError):
            parse_steerlm_label(bad)
    with pytest.raises(ValueError, match="verbosity is missing"):
        steerlm_label({"helpfulness": 1, "correctness": 1, "coherence": 1, "complexity": 1})


def test_judge_answer_sft():
    prompts = [
        prompt(1, metadata={"judge_answer": "  A red square.\n"}),
        prompt(2, metadata={"judge_answer": "   "}),
        prompt(3),
    ]
    result = judge_answer_sft(prompts, {}, ANY, seed=0)
    assert result.rows == [
        SftRow(prompt_id=1, question="question 1", response="A red square.", rater="judge_answer")
    ]
    assert result.dropped == {"no judge answer": 2}


def test_reference_sft_answers_options_the_seed_000_way_and_others_by_their_reference():
    from datasets_app.core.curation.strategies import reference_sft

    prompts = [
        sqa(1, hint=""),
        prompt(2, reference_answer=" yes "),
        prompt(3),
        prompt(4, choices=("a", "b"), answer_index=None, reference_answer="a"),
    ]
    result = reference_sft(prompts, {}, ANY, seed=0)
    assert result.rows == [
        SftRow(
            prompt_id=1,
            question="Which property do these two objects have in common?\nA. shiny\nB. soft",
            response="The answer is B.",
            rater="reference",
        ),
        SftRow(prompt_id=2, question="question 2", response="yes", rater="reference"),
        SftRow(prompt_id=4, question="question 4", response="a", rater="reference"),
    ]
    assert result.dropped == {"no reference answer": 1}


# --- ScienceQA ----------------------------------------------------------------------------


def sqa(prompt_id, lecture="An object has different properties.", hint="Select the best answer."):
    return RatedPrompt(
        prompt_id,
        source_id=2,
        question="Which property do these two objects have in common?",
        choices=("shiny", "soft"),
        answer_index=1,
        hint=hint,
        metadata={"lecture": lecture, "solution": "Both objects are soft."},
    )


def test_scienceqa_full_text_exactly():
    result = scienceqa_full([sqa(1), prompt(2)], {}, ANY, seed=0)
    assert result.rows == [
        SftRow(
            prompt_id=1,
            question="Context: Select the best answer.\n"
            "Which property do these two objects have in common?\n"
            "A. shiny\n"
            "B. soft",
            response="An object has different properties.\n"
            "Both objects are soft.\n"
            "The answer is B.",
        )
    ]
    assert result.dropped == {"not a ScienceQA item (choices and answer)": 1}


def test_scienceqa_short_and_no_hint():
    row = scienceqa_short([sqa(1, hint="")], {}, ANY, seed=0).rows[0]
    assert row.question == "Which property do these two objects have in common?\nA. shiny\nB. soft"
    assert row.response == "The answer is B."


def test_scienceqa_reformatted_rewrites_only_long_answers():
    calls = []

    def rewrite(instruction):
        calls.append(instruction)
        return "Analysis: Both are soft.\nThe answer is B."

    long, short = sqa(1, lecture="x" * 200), sqa(2)
    result = scienceqa_reformatted([long, short], {"rewrite": rewrite}, ANY, seed=0)
    assert len(calls) == 1
    assert "x" * 200 in calls[0] and "The answer is B." in calls[0]
    assert "A. shiny\nB. soft" in calls[0]
    assert [(r.prompt_id, r.response, r.rater) for r in result.rows] == [
        (1, "Analysis: Both are soft.\nThe answer is B.", "rewrite"),
        (2, "An object has different properties.\nBoth objects are soft.\nThe answer is B.", ""),
    ]
    # A rewrite that loses or changes the answer is dropped, not kept.
    wrong = scienceqa_reformatted([long], {"rewrite": lambda _: "The answer is A."}, ANY, seed=0)
    assert wrong.rows == [] and wrong.dropped == {"rewrite changed or lost the answer": 1}
    # A lower threshold sends the short one too.
    scienceqa_reformatted([short], {"rewrite": rewrite, "max_chars": 10}, ANY, seed=0)
    assert len(calls) == 2


def test_scienceqa_subsample_is_seeded_and_made_before_rewriting():
    items = [sqa(i, lecture="y" * 300) for i in range(30)]
    calls = []

    def rewrite(instruction):
        calls.append(instruction)
        return "The answer is B."

    result = scienceqa_reformatted(items, {"rewrite": rewrite, "subsample": 10}, ANY, seed=3)
    assert len(result.rows) == 10 and len(calls) == 10
    assert result.dropped == {"subsampled out": 20}
    ids = [r.prompt_id for r in result.rows]
    assert ids == [
        r.prompt_id for r in scienceqa_full(items[::-1], {"subsample": 10}, ANY, seed=3).rows
    ]
    assert ids != [r.prompt_id for r in scienceqa_full(items, {"subsample": 10}, ANY, seed=4).rows]


def test_a_subsample_and_the_eval_split_draw_independently():
    # Both rank prompts by a hash; unsalted, a 10% subsample would all fall in a 50% eval.
    items = [sqa(i) for i in range(200)]
    result = run_strategy(
        "scienceqa_short", items, {"subsample": 20}, ANY, {"eval_fraction": 0.5}, 1
    )
    assert {r.split for r in result.rows} == {"train", "eval"}


# --- filters and the split ----------------------------------------------------------------


def dpo(prompt_id, margin, chosen="good", rejected="bad", chosen_id=None):
    return PreferenceRow(
        prompt_id,
        "q",
        chosen,
        rejected,
        chosen_id or prompt_id * 10,
        prompt_id * 10 + 1,
        margin=margin,
    )


def sft(prompt_id, completion_id, response="an answer", question="q"):
    return SftRow(prompt_id, question, response, completion_id=completion_id)


def test_filter_min_margin_and_drop_ties():
    rows = [dpo(1, 1.0), dpo(2, 3.0), dpo(3, 0.0)]
    kept, dropped = apply_filters(rows, {"min_margin": 2}, seed=0)
    assert [r.prompt_id for r in kept] == [2] and dropped == {"margin below 2": 2}
    kept, dropped = apply_filters(rows, {"drop_ties": True}, seed=0)
    assert [r.prompt_id for r in kept] == [1, 2] and dropped == {"tie (margin 0)": 1}


def test_filter_dedupe():
    rows = [dpo(1, 1.0, "same", "same "), dpo(2, 1.0)]
    kept, dropped = apply_filters(rows, {"dedupe": True}, seed=0)
    assert [r.prompt_id for r in kept] == [2]
    assert dropped == {"chosen and rejected identical": 1}
    # The same text twice for one prompt goes; the same text for another image stays.
    rows = [sft(1, 12, "red"), sft(1, 11, "red"), sft(1, 13, "blue"), sft(2, 21, "red")]
    kept, dropped = apply_filters(rows, {"dedupe": True}, seed=0)
    assert [(r.prompt_id, r.completion_id) for r in kept] == [(1, 11), (1, 13), (2, 21)]
    assert dropped == {"duplicate row": 1}


def test_filter_lengths():
    rows = [sft(1, 1, "x" * 5), sft(2, 2, "x" * 10), sft(3, 3, "x" * 20)]
    kept, dropped = apply_filters(rows, {"min_chars": 6, "max_chars": 15}, seed=0)
    assert [r.prompt_id for r in kept] == [2]
    assert dropped == {
        "response shorter than 6 characters": 1,
        "response longer than 15 characters": 1,
    }
    # Pairs: both answers must fit.
    kept, _ = apply_filters([dpo(1, 1.0, "x" * 10, "x" * 3)], {"min_chars": 5}, seed=0)
    assert kept == []


def test_filter_subsample():
    rows = [sft(i, i) for i in range(10)]
    kept, dropped = apply_filters(rows, {"subsample": 4}, seed=0)
    assert len(kept) == 4 and dropped == {"subsampled out": 6}
    assert apply_filters(rows[::-1], {"subsample": 4}, seed=0)[0] == kept
    assert apply_filters(rows, {"subsample": 4}, seed=1)[0] != kept
    assert apply_filters(rows, {"subsample": 40}, seed=0) == (rows, {})


def test_eval_split_keeps_prompts_whole_and_is_stable():
    # Three rows per prompt, as steerlm makes.
    rows = [sft(p, 10 * p + k) for p in range(1000) for k in range(3)]
    kept, dropped = apply_filters(rows, {"eval_fraction": 0.1}, seed=5)
    assert dropped == {} and len(kept) == len(rows)
    splits: dict[int, set[str]] = {}
    for row in kept:
        splits.setdefault(row.prompt_id, set()).add(row.split)
    assert all(len(v) == 1 for v in splits.values())
    eval_prompts = {p for p, v in splits.items() if v == {"eval"}}
    assert 50 < len(eval_prompts) < 150
    # Adding prompts moves none of the old ones.
    more = rows + [sft(p, 10 * p) for p in range(1000, 1500)]
    kept_more, _ = apply_filters(more, {"eval_fraction": 0.1}, seed=5)
    assert {r.prompt_id for r in kept_more if r.split == "eval" and r.prompt_id < 1000} == (
        eval_prompts
    )
    # Another seed, another split.
    kept_other, _ = apply_filters(rows, {"eval_fraction": 0.1}, seed=6)
    assert {r.prompt_id for r in kept_other if r.split == "eval"} != eval_prompts


def test_filters_run_in_a_fixed_order():
    rows = [dpo(i, float(i % 3)) for i in range(30)]
    a = apply_filters(rows, {"subsample": 5, "drop_ties": True, "eval_fraction": 0.3}, seed=0)
    b = apply_filters(rows, {"eval_fraction": 0.3, "drop_ties": True, "subsample": 5}, seed=0)
    assert a == b
    assert all(r.margin != 0 for r in a[0]) and len(a[0]) == 5


def test_filter_validation():
    with pytest.raises(ValueError, match="unknown filter"):
        apply_filters([], {"min_score": 1}, seed=0)
    with pytest.raises(ValueError, match="eval_fraction"):
        apply_filters([], {"eval_fraction": 1.0}, seed=0)
    with pytest.raises(ValueError, match="min_chars is larger"):
        apply_filters([], {"min_chars": 10, "max_chars": 5}, seed=0)
    with pytest.raises(ValueError, match="dedupe must be true or false"):
        apply_filters([], {"dedupe": "yes"}, seed=0)
    with pytest.raises(ValueError, match="subsample must be an integer"):
        apply_filters([], {"subsample": 0}, seed=0)
    with pytest.raises(ValueError, match="drop_ties applies to DPO pairs"):
        run_strategy("rejection_sampling", [], {}, ANY, {"drop_ties": True}, 0)
    with pytest.raises(ValueError, match="min_margin applies to DPO pairs"):
        apply_filters([sft(1, 1)], {"min_margin": 1}, seed=0)


# --- run_strategy, parameters, checksum ---------------------------------------------------


def test_run_strategy_merges_strategy_and_filter_drops():
    result = run_strategy("best_vs_worst", [P1, P2, P3, P4], {}, JUDGE, {"min_margin": 2}, 0)
    assert pairs(result) == [(1, 11, 13, 3.0)]
    assert result.dropped == {
        "fewer than 2 rated completions": 1,
        "best and worst tie": 1,
        "margin below 2": 1,
    }


def rewarded(prompt_id: int, **rewards: float) -> RatedPrompt:
    """A prompt whose completions (id: reward) a reward judge, judge:9, scored."""
    return RatedPrompt(
        prompt_id,
        source_id=1,
        question=f"q{prompt_id}",
        completions=tuple(
            RatedCompletion(int(cid[1:]), f"answer {cid[1:]}", {}, rewards={"judge:9": r})
            for cid, r in rewards.items()
        ),
    )


def test_every_strategy_runs_with_its_defaults():
    for name, strategy in STRATEGIES.items():
        params = {"rewrite": str.upper} if name == "scienceqa_reformatted" else {}
        data = [P1, sqa(2), rewarded(3, c31=0.5, c32=-1.0)]
        result = run_strategy(name, data, params, ANY, {}, 0)
        assert result.kind == strategy.kind
        assert strategy.description


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("best_vs_random_gap", {"gapp": 2}, "unknown parameter.*gapp.*known: attributes"),
        ("best_vs_random_gap", {"gap": -1}, "gap must be a number >= 0"),
        ("best_vs_random_gap", {"gap": "2"}, "gap must be a number"),
        ("best_vs_random_gap", {"gap": True}, "gap must be a number"),
        ("best_vs_random_gap", {"gap": float("nan")}, "gap must be a number"),
        ("best_vs_worst", {"attributes": ["humour"]}, "attributes must be"),
        ("best_vs_worst", {"attributes": []}, "attributes must be"),
        ("best_vs_worst", {"weights": {"verbosity": -1}}, "weights for attributes not summed"),
        ("best_vs_worst", {"weights": {"correctness": "2"}}, "weights must be"),
        ("rejection_sampling", {"min_score": "high"}, "min_score must be"),
        ("steerlm", {"gap": 2}, "unknown parameter.*known: none"),
        ("scienceqa_full", {"subsample": 0}, "subsample must be an integer >= 1"),
        ("scienceqa_reformatted", {}, "needs a `rewrite` callable"),
        ("scienceqa_reformatted", {"rewrite": "gpt-4o"}, "rewrite must be a callable"),
        ("scienceqa_reformatted", {"rewrite": str, "template": "{nope}"}, "template must be"),
        ("scienceqa_reformatted", {"rewrite": str, "template": "no slot"}, "{response}"),
        ("reward_best_vs_worst", {"reward": "reward:3"}, "reward must be a reward judge"),
        ("reward_best_vs_worst", {"min_margin": -1}, "min_margin must be a number >= 0"),
        ("reward_best_of_n", {"min_reward": "high"}, "min_reward must be a number or null"),
        ("no_such_strategy", {}, "unknown strategy 'no_such_strategy'; strategies are"),
    ],
)
def test_param_validation(name, params, message):
    with pytest.raises(ValueError, match=message):
        run_strategy(name, [P1], params, ANY, {}, 0)


def test_resolve_params_fills_the_defaults():
    assert resolve_params("best_vs_random_gap", {"gap": 3}) == {
        "attributes": ["helpfulness", "correctness", "coherence"],
        "weights": None,
        "gap": 3,
        "include_heldout": False,  # every strategy's
    }


def test_row_checksum_is_canonical():
    rows = [sft(1, 11), sft(2, 21), sft(1, 12)]
    assert row_checksum(rows) == row_checksum(rows[::-1])
    assert len(row_checksum(rows)) == 64
    assert row_checksum(rows) != row_checksum([*rows[:2], sft(1, 12, "an answer!")])
    assert row_checksum(rows) != row_checksum([sft(1, 11), sft(2, 21)])


def test_curation_core_does_not_import_django():
    code = "import sys, datasets_app.core.curation; sys.exit('django' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_reward_strategies_rank_by_the_reward_judges_scalar():
    from datasets_app.core.curation.strategies import reward_best_of_n, reward_best_vs_worst

    data = [
        rewarded(2, c21=-0.2, c22=1.5, c23=-3.0),
        rewarded(1, c11=0.3, c12=0.3),  # a tie: no pair
        rewarded(3, c31=2.0),  # one answer: no pair, but a best-of-N
    ]
    pairs = reward_best_vs_worst(data, {}, ANY, seed=0)
    assert [(r.prompt_id, r.chosen_id, r.rejected_id, r.margin) for r in pairs.rows] == [
        (2, 22, 23, 4.5)
    ]
    assert pairs.rows[0].rater == "judge:9" and pairs.rows[0].chosen == "answer 22"
    assert pairs.dropped == {
        "reward margin <= 0": 1,
        "fewer than 2 completions with a reward": 1,
    }
    assert reward_best_vs_worst(data, {"min_margin": 5}, ANY, seed=0).rows == []

    best = reward_best_of_n(data, {"min_reward": 1.8}, ANY, seed=0)
    assert [(r.prompt_id, r.completion_id) for r in best.rows] == [(3, 31)]
    assert best.dropped == {"best reward below 1.8": 2}
    assert [r.completion_id for r in reward_best_of_n(data, {}, ANY, seed=0).rows] == [
        11,
        22,
        31,
    ]


@pytest.mark.parametrize(
    ("rewards", "asked", "message"),
    [
        ([{}], "", "no completion here has a reward: score them"),
        ([{"judge:9": 1.0}, {"judge:10": 2.0}], "", r"several reward judges.*judge:9, judge:10"),
        ([{"judge:9": 1.0}], "judge:4", "no completion here has a reward from judge:4"),
    ],
)
def test_ranking_by_reward_names_the_judge_it_needs(rewards, asked, message):
    from datasets_app.core.curation.strategies import reward_best_vs_worst

    completions = tuple(
        RatedCompletion(i, "a", {}, rewards=r) for i, r in enumerate(rewards, start=1)
    )
    data = [RatedPrompt(1, source_id=1, question="q", completions=completions)]
    with pytest.raises(ValueError, match=message):
        reward_best_vs_worst(data, {"reward": asked}, ANY, seed=0)
