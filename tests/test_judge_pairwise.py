"""Pairwise judging (issue 18.4): two completions per call, K(K-1)/2 calls a prompt (twice
that in both orders), a completion's score its wins minus its losses, which curation ranks
by; through the real SDK against the fake server, and with the oracle."""

from __future__ import annotations

import json
import random

import pytest
from django.core.management import call_command

from annotation.core.judges import pairwise
from annotation.core.judges.base import InvalidJudgeOutput
from annotation.models import Completion, JudgeCall, RewardScore
from annotation.services import judging
from tests.fake_judge_servers import expected_scores, schema_instance
from training.models import Checkpoint

# --- the core ---------------------------------------------------------------------------------


def test_pairs_and_net_wins():
    assert pairwise.pairs([1, 2, 3], both_orders=False) == [(1, 2), (1, 3), (2, 3)]
    assert len(pairwise.pairs([1, 2, 3, 4], both_orders=True)) == 12
    votes = [((1, 2), 0), ((1, 3), 1), ((2, 3), None), ((3, 1), 0)]
    assert pairwise.net_wins(votes) == {1: -1.0, 2: -1.0, 3: 2.0}


def test_every_answer_the_schema_allows_is_a_verdict_and_nothing_else_is():
    rng = random.Random(0)
    for _ in range(50):
        answer = schema_instance(pairwise.pairwise_schema(), rng)
        verdict = pairwise.parse_verdict(json.dumps(answer))
        assert verdict.winner in (0, 1, None)
    for bad in ('{"reasoning": "x", "winner": "response_3"}', '{"winner": 1}', "prose"):
        with pytest.raises(InvalidJudgeOutput):
            pairwise.parse_verdict(bad)


# --- jobs -------------------------------------------------------------------------------------

pytest_db = pytest.mark.django_db


@pytest_db
def test_pairwise_through_the_sdk_scores_wins_minus_losses_and_caches(
    settings, fake_openai, shapes_source, numbered_completions
):
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_BASE_URL = fake_openai.base_url
    spec = ["judge", "--judge", "openai:gpt-4o-mini", "--source", "sqa", "--mode", "pairwise"]
    call_command(*spec)
    assert fake_openai.calls == 6 * 6  # six prompts, 4 x 3 / 2 pairs each
    judge = judging.judge_config_from_spec("openai:gpt-4o-mini")
    scores = dict(RewardScore.objects.filter(judge=judge).values_list("completion_id", "reward"))
    assert len(scores) == 24
    for prompt in shapes_source.prompts.all():
        mine = list(Completion.objects.filter(prompt=prompt))
        sums = {c.pk: sum(expected_scores(c.text).values()) for c in mine}
        expected = {c.pk: 0.0 for c in mine}
        for a, b in pairwise.pairs([c.pk for c in mine], both_orders=False):
            if sums[a] != sums[b]:
                winner, loser = (a, b) if sums[a] > sums[b] else (b, a)
                expected[winner] += 1
                expected[loser] -= 1
        assert {c.pk: scores[c.pk] for c in mine} == expected
    assert set(JudgeCall.objects.values_list("mode", flat=True)) == {"pairwise"}

    call_command(*spec)  # a rerun: every comparison from the cache
    assert fake_openai.calls == 36
    call_command(*spec, "--both-orders")  # only the reversed orders are new
    assert fake_openai.calls == 72
    # The fake judge is order-blind: both orders agree, so every score doubles.
    doubled = dict(RewardScore.objects.filter(judge=judge).values_list("completion_id", "reward"))
    assert doubled == {k: 2 * v for k, v in scores.items()}


@pytest_db
def test_the_oracle_compares_and_curation_ranks_by_its_pairwise_score(shapes_source):
    from datasets_app.services import versions

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    letters = "ABCD"
    for prompt in shapes_source.prompts.all():
        right = letters[prompt.answer_index]
        wrong = letters[(prompt.answer_index + 1) % len(prompt.choices)]
        Completion.objects.bulk_create(
            Completion(prompt=prompt, checkpoint=checkpoint, text=text, sample_index=i)
            for i, text in enumerate(
                [f"The answer is {wrong}.", "I cannot tell.", f"The answer is {right}."]
            )
        )
    call_command("judge", "--judge", "oracle", "--source", "sqa", "--mode", "pairwise")
    oracle = judging.judge_config_from_spec("oracle")
    version = versions.dataset_version_build(
        name="pairwise-oracle",
        strategy="reward_best_vs_worst",
        params={"reward": f"judge:{oracle.pk}"},
        selection={"source_id": shapes_source.pk},
    )
    rows = list(version.rows.select_related("chosen_completion", "rejected_completion"))
    assert len(rows) == 6
    for row in rows:
        assert row.chosen_completion.text.startswith("The answer is")
        assert row.margin == 4.0  # the right one beat both (+2), "cannot tell" lost both (-2)
        assert row.rejected_completion.text == "I cannot tell."
