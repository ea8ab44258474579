"""BDHS's algorithm (seed 002, Appendix E, Algorithm 1) on fixed inputs: sentences, the
pivot, the yes/no swap, and the loop that samples again while a try is too similar."""

from __future__ import annotations

import random

import pytest

from training.core.generation.bdhs import (
    BdhsParams,
    bdhs_response,
    cut_at_pivot,
    first_sentence,
    split_sentences,
    swap_leading_yes_no,
)


def test_sentences_split_at_their_ends_and_join_back():
    text = "Yes, there is a red circle. It is on the left!  Is it big? No."
    parts = split_sentences(text)
    assert parts == ["Yes, there is a red circle. ", "It is on the left!  ", "Is it big? ", "No."]
    assert "".join(parts) == text
    assert split_sentences("no full stop") == ["no full stop"]
    assert first_sentence("blue square. And more.") == "blue square. "
    assert split_sentences("3.5 cm wide.") == ["3.5 cm wide."]  # a decimal point is no end


def test_the_pivot_keeps_whole_words_and_never_the_whole_sentence():
    sentence = "There is a red circle."
    cuts = {cut_at_pivot(sentence, random.Random(seed)) for seed in range(200)}
    assert cuts == {"", "There ", "There is ", "There is a ", "There is a red "}
    assert cut_at_pivot("   ", random.Random(0)) == ""


def test_a_leading_yes_or_no_is_swapped_half_the_time_keeping_its_case():
    rng = random.Random(0)
    swapped = [swap_leading_yes_no("Yes, it is.", rng) for _ in range(1000)]
    assert set(swapped) == {"Yes, it is.", "No, it is."}
    assert 450 < swapped.count("No, it is.") < 550
    assert swap_leading_yes_no("\n no.", random.Random(1), probability=1.0) == "\n yes."
    assert swap_leading_yes_no("NO WAY", random.Random(1), probability=1.0) == "YES WAY"
    assert swap_leading_yes_no("Nobody knows.", random.Random(1), probability=1.0) == (
        "Nobody knows."  # a word that only starts with "no" is left alone
    )
    assert swap_leading_yes_no("It is yes.", random.Random(1), probability=1.0) == "It is yes."


def test_a_swapped_yes_or_no_is_kept_in_the_prefix_even_in_a_one_word_answer():
    seen: list[str] = []

    def continue_fn(prefixes, guided):
        seen.extend(prefixes)
        return ["." for _ in prefixes]

    params = BdhsParams(swap_probability=1.0, similarity_threshold=1.0)
    result = bdhs_response("Yes.", continue_fn, lambda a, b: 0.0, random.Random(0), params)
    assert seen == ["No"] and result.text == "No."
    seen.clear()
    bdhs_response("No, it is blue.", continue_fn, lambda a, b: 0.0, random.Random(4), params)
    assert seen[0].startswith("Yes")  # the counterpart opens the prefix


def test_each_sentence_continues_from_the_whole_reference_before_it():
    seen: list[list[str]] = []

    def continue_fn(prefixes, guided):
        assert guided
        seen.append(list(prefixes))
        return ["blue thing. Extra sentence dropped." for _ in prefixes]

    params = BdhsParams(swap_probability=0.0, similarity_threshold=1.0)
    result = bdhs_response(
        "A red circle. A green star.", continue_fn, lambda a, b: 0.0, random.Random(3), params
    )
    (prefixes,) = seen
    assert len(prefixes) == 2 and prefixes[1].startswith("A red circle. ")  # reference, not y-
    assert "A red circle. A green star."[: len(prefixes[0])] == prefixes[0]
    # Each sentence: the reference up to the pivot, then the model's first sentence only.
    assert result.text.count("blue thing.") == 2 and "dropped" not in result.text
    assert (result.tries, result.guided, result.similarities) == (1, True, [0.0])


def test_a_try_too_similar_is_sampled_again_and_the_last_one_is_unguided():
    calls: list[list[str]] = []

    def continue_fn(prefixes, guided):
        calls.append((list(prefixes), guided))
        return ["same." if guided else "free answer." for _ in prefixes]

    scores = iter([0.99, 0.98, 0.97, 0.5])
    params = BdhsParams(max_tries=4, similarity_threshold=0.9)
    result = bdhs_response(
        "It is red.", continue_fn, lambda a, b: next(scores), random.Random(0), params
    )
    assert result.tries == 4 and not result.guided and result.text == "free answer."
    assert result.similarities == [0.99, 0.98, 0.97, 0.5]
    assert calls[-1] == ([""], False) and all(guided for _, guided in calls[:-1])
    # Similar enough to keep sampling, but the unguided try is kept whatever its score.
    always = BdhsParams(max_tries=2, similarity_threshold=0.1)
    kept = bdhs_response("It is red.", continue_fn, lambda a, b: 1.0, random.Random(0), always)
    assert (kept.tries, kept.guided, kept.similarity) == (2, False, 1.0)
    # Below the threshold at once: one try.
    once = bdhs_response("It is red.", continue_fn, lambda a, b: 0.2, random.Random(0), params)
    assert (once.tries, once.guided) == (1, True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (BdhsParams(rho=1.5), "rho must be in"),
        (BdhsParams(max_tries=0), "max_tries"),
        (BdhsParams(similarity_threshold=2.0), "cosine"),
    ],
)
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        bdhs_response(
            "Ref.", lambda p, guided: ["x."] * len(p), lambda a, b: 0.0, random.Random(0), params
        )
    with pytest.raises(ValueError, match="non-empty reference"):
        bdhs_response("  ", lambda p, guided: ["x."] * len(p), lambda a, b: 0.0, random.Random(0))


def test_the_bdhs_strategy_pairs_the_reference_with_the_policys_own_answer():
    from datasets_app.core.curation.strategies import run_strategy
    from datasets_app.core.curation.types import RatedCompletion, RatedPrompt

    def prompt(pk, reference, *completions):
        return RatedPrompt(
            pk, 1, f"q{pk}", completions=tuple(completions), reference_answer=reference
        )

    sampled = RatedCompletion(10, "a sampled answer")  # plain samples are not BDHS answers
    prompts = [
        prompt(
            1, "Yes, it is red.", sampled, RatedCompletion(11, "No, it is blue.", method="bdhs")
        ),
        prompt(2, "", RatedCompletion(12, "x", method="bdhs")),
        prompt(3, "Two.", sampled),
        prompt(4, "Two.", RatedCompletion(13, "Two.", method="bdhs")),
    ]
    result = run_strategy("bdhs", prompts, {}, None, {}, 0)
    (row,) = result.rows
    assert (row.chosen, row.rejected, row.rejected_id, row.rater) == (
        "Yes, it is red.",
        "No, it is blue.",
        11,
        "bdhs",
    )
    assert result.dropped == {
        "no reference answer": 1,
        "no BDHS completion": 1,
        "the BDHS answer equals the reference": 1,
    }


def test_the_oracle_corruption_changes_one_fact_of_its_kind():
    from datasets_app.core.curation.corruption import oracle_corruption

    rng = random.Random(0)
    outs = {oracle_corruption("There is a red circle on the left.", rng) for _ in range(200)}
    expected = {f"There is a {c} circle on the left." for c in ("green", "blue", "yellow")} | {
        f"There is a red {k} on the left." for k in ("square", "triangle")
    }
    assert outs == expected | {"There is a red circle on the right."}
    assert oracle_corruption("Yes", random.Random(1)) == "No"
    assert oracle_corruption("2", random.Random(1)) in {"1", "3", "4"}
    assert oracle_corruption("A dog in a park.", random.Random(1)) is None
    assert oracle_corruption("Reddish hue.", random.Random(1)) is None  # whole words only


def test_the_corrupted_strategy_uses_the_oracle_for_free_or_a_rewrite_when_given():
    from datasets_app.core.curation.strategies import run_strategy
    from datasets_app.core.curation.types import RatedPrompt

    prompts = [
        RatedPrompt(1, 1, "Is there a red shape?", reference_answer="yes"),
        RatedPrompt(2, 1, "Describe it.", reference_answer="A dog in a park."),
        RatedPrompt(3, 1, "How many?", reference_answer=""),
    ]
    free = run_strategy("corrupted", prompts, {}, None, {}, 0)
    (row,) = free.rows
    assert (row.chosen, row.rejected, row.rater) == ("yes", "no", "oracle_corruption")
    assert free.dropped == {"nothing in the answer to corrupt": 1, "no reference answer": 1}
    asked: list[str] = []

    def rewrite(text: str) -> str:
        asked.append(text)
        return "A cat in a park." if "dog" in text else "no"

    judged = run_strategy("corrupted", prompts, {"rewrite": rewrite}, None, {}, 0)
    assert [(r.prompt_id, r.rejected, r.rater) for r in judged.rows] == [
        (1, "no", "rewrite"),
        (2, "A cat in a park.", "rewrite"),
    ]
    assert "CORRECT ANSWER:\nA dog in a park." in asked[1]
    with pytest.raises(ValueError, match="corrupt_template"):
        run_strategy("corrupted", prompts, {"corrupt_template": "no placeholder"}, None, {}, 0)
