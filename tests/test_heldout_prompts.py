"""Held-out prompts never become training rows unless the recipe says include_heldout
(issue 12, point 6): in the pure core for every registered strategy, through the service
with every strategy, from the curate command and from the build page."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotation.models import ATTRIBUTES, Completion, JudgeConfig, PairPick, Rating, RewardScore
from datasets_app.core.curation import (
    STRATEGIES,
    Pick,
    RatedCompletion,
    RatedPrompt,
    RaterSelection,
)
from datasets_app.core.curation.strategies import HELD_OUT_REASON, run_strategy
from datasets_app.models import DatasetVersion, Prompt
from datasets_app.services import exports, versions
from tests import factories
from training.models import Checkpoint

SPLITS = ("train", "validation", "test")


def _scores(value: int) -> dict[str, int]:
    return dict.fromkeys(ATTRIBUTES, value)


def _params(name: str) -> dict:
    # Long enough that nothing is rewritten: the rewrite must exist, never be called.
    if name == "scienceqa_reformatted":
        return {"rewrite": lambda text: pytest.fail("nothing to rewrite"), "max_chars": 10_000}
    return {}


def _rated(prompt_id: int, split: str) -> RatedPrompt:
    """A prompt every strategy makes a row from: rated completions, a pick, a judge answer,
    ScienceQA choices and answer."""
    rated = [
        RatedCompletion(
            prompt_id * 10 + i,
            f"answer {i}",
            {"judge:1": _scores(score)},
            rewards={"judge:5": float(score)},  # a reward model's scalar, for the reward ones
        )
        for i, score in enumerate((4, 2, 1))
    ]
    bdhs = RatedCompletion(prompt_id * 10 + 9, "no", method="bdhs")  # BDHS's own answer
    completions = (*rated, bdhs)
    pick_ids = (prompt_id * 10, prompt_id * 10 + 2)
    return RatedPrompt(
        prompt_id,
        source_id=1,
        question=f"question {prompt_id}",
        completions=completions,
        picks=(Pick("user:1", *pick_ids),),
        choices=("red", "blue"),
        answer_index=0,
        reference_answer="yes",  # what BDHS and the corruptions start from
        split=split,
        metadata={"judge_answer": "The answer is A.", "lecture": "L.", "solution": "S."},
    )


PROMPTS = [_rated(i, SPLITS[i % 3]) for i in range(1, 13)]  # 4 of each split
HELD_OUT = {p.prompt_id for p in PROMPTS if p.split != "train"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_strategy_puts_a_heldout_prompt_in_its_rows(name):
    result = run_strategy(name, PROMPTS, _params(name), RaterSelection(), {}, 0)
    kept = {r.prompt_id for r in result.rows}
    assert kept and not kept & HELD_OUT, (name, kept & HELD_OUT)
    assert result.dropped[HELD_OUT_REASON] == len(HELD_OUT)
    # The 50/50 eval split is drawn among the training prompts only.
    split = run_strategy(name, PROMPTS, _params(name), RaterSelection(), {"eval_fraction": 0.5}, 0)
    assert {r.split for r in split.rows} == {"train", "eval"}
    assert not {r.prompt_id for r in split.rows} & HELD_OUT


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_include_heldout_puts_them_in_train(name):
    params = {**_params(name), "include_heldout": True}
    result = run_strategy(name, PROMPTS, params, RaterSelection(), {}, 0)
    assert {r.prompt_id for r in result.rows if r.split == "train"} >= HELD_OUT
    assert HELD_OUT_REASON not in result.dropped


def test_include_heldout_must_be_a_boolean():
    with pytest.raises(ValueError, match="include_heldout must be true or false"):
        run_strategy("steerlm", PROMPTS, {"include_heldout": "yes"}, RaterSelection(), {}, 0)


# --- through the service, the command and the page -----------------------------------------


@pytest.fixture
def three_splits(db, tmp_path):
    """Ten shapes images (8 train, 1 validation, 1 test), each with three completions rated
    by a judge (4, 2, 1 on every attribute), an annotator's pick and the oracle's answer."""
    from annotation.services import judging
    from datasets_app.core.shapes import make_shapes
    from datasets_app.services.imports import prompts_import

    make_shapes(tmp_path / "shapes", n=10, seed=2)
    source = prompts_import(
        path=tmp_path / "shapes" / "scienceqa.parquet", source_name="splits", fmt="scienceqa"
    ).source
    assert set(source.prompts.values_list("split", flat=True)) == set(SPLITS)
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    judge = factories.judge("rater")
    reward_model = JudgeConfig.objects.create(name="reward:rm", provider="reward", model="rm")
    source.prompts.update(reference_answer="yes")  # what BDHS and the corruptions start from
    for prompt in source.prompts.all():
        Completion.objects.create(  # BDHS's own answer, unrated
            prompt=prompt,
            checkpoint=checkpoint,
            text="no",
            sample_index=9,
            sampling={"method": "bdhs"},
        )
        made = []
        for i, score in enumerate((4, 2, 1)):
            completion = Completion.objects.create(
                prompt=prompt, checkpoint=checkpoint, text=f"answer {i}", sample_index=i
            )
            Rating.objects.create(completion=completion, judge=judge, **_scores(score))
            RewardScore.objects.create(completion=completion, judge=reward_model, reward=score)
            made.append(completion)
        PairPick.objects.create(prompt=prompt, source=source, chosen=made[0], rejected=made[2])
    oracle = judging.judge_config_from_spec("oracle")
    job = judging.judge_launch(
        judge_config=oracle, selection={"source_id": source.pk}, mode="answer", enqueue=False
    )
    judging.judge_run(job_id=job.pk)
    return source, oracle


def _build(source, oracle, name, **extra):
    params = {"max_chars": 10_000} if name == "scienceqa_reformatted" else {}
    return versions.dataset_version_build(
        name=f"v-{name}",
        strategy=name,
        params={**params, **extra.pop("params", {})},
        selection={"source_id": source.pk},
        answer_judge_id=oracle.pk,
        rewrite_judge_id=oracle.pk if name == "scienceqa_reformatted" else None,
        **extra,
    )


def _heldout_ids(source) -> set[int]:
    return set(source.prompts.exclude(split="train").values_list("id", flat=True))


@pytest.mark.django_db
def test_every_strategy_builds_a_version_without_heldout_prompts(three_splits):
    source, oracle = three_splits
    held_out = _heldout_ids(source)
    assert len(held_out) == 2
    for name in STRATEGIES:
        version = _build(source, oracle, name, filters={"eval_fraction": 0.3})
        ids = set(version.rows.values_list("prompt_id", flat=True))
        assert ids and not ids & held_out, name
        assert version.params["include_heldout"] is False
        assert version.stats["dropped"][HELD_OUT_REASON] == 2


@pytest.mark.django_db
def test_include_heldout_is_explicit_and_recorded(three_splits):
    source, oracle = three_splits
    held_out = _heldout_ids(source)
    for name in STRATEGIES:
        version = _build(source, oracle, name, params={"include_heldout": True})
        ids = set(version.rows.filter(split="train").values_list("prompt_id", flat=True))
        assert held_out <= ids, name
        assert version.params["include_heldout"] is True


@pytest.mark.django_db
def test_a_heldout_only_selection_is_refused_with_the_reason(three_splits):
    source, oracle = three_splits
    with pytest.raises(ValueError, match=r"makes no rows.*include_heldout"):
        versions.dataset_version_build(
            name="test-only",
            strategy="judge_answer_sft",
            selection={"source_id": source.pk, "split": "test"},
            answer_judge_id=oracle.pk,
        )
    assert not DatasetVersion.objects.exists()


@pytest.mark.django_db
def test_the_curate_command_leaves_heldout_out_unless_asked(three_splits, capsys, tmp_path):
    source, _ = three_splits
    held_out = _heldout_ids(source)
    call_command("curate", strategy="rejection_sampling", name="cli", source=[source.name])
    plain = DatasetVersion.objects.get(name="cli", version=1)
    assert not set(plain.rows.values_list("prompt_id", flat=True)) & held_out
    assert f"dropped 2: {HELD_OUT_REASON}" in capsys.readouterr().out
    call_command(
        "curate", "--include-heldout", strategy="rejection_sampling", name="cli", source=source.name
    )
    opted = DatasetVersion.objects.get(name="cli", version=2)
    assert held_out <= set(opted.rows.filter(split="train").values_list("prompt_id", flat=True))
    assert opted.params["include_heldout"] is True
    for version, recorded in ((plain, "false"), (opted, "true")):
        out = tmp_path / f"export-{version.version}"
        exports.dataset_version_export(version=version, out_dir=out)
        assert f'"include_heldout": {recorded}' in (out / "README.md").read_text()


@pytest.mark.django_db
def test_the_build_page_has_an_include_heldout_checkbox(client, curator, three_splits):
    source, _ = three_splits
    held_out = _heldout_ids(source)
    form = {
        "name": "page",
        "strategy": "best_vs_worst",
        "kinds": ["judge"],
        "combine": "mean",
        "source": source.pk,
        "seed": 0,
        "save": "1",
    }
    client.force_login(curator)
    assert (
        'name="include_heldout"' in client.get(reverse("datasets_app:version_new")).content.decode()
    )
    client.post(reverse("datasets_app:version_new"), form)
    client.post(reverse("datasets_app:version_new"), {**form, "include_heldout": "on"})
    plain, opted = DatasetVersion.objects.filter(name="page").order_by("version")
    assert not set(plain.rows.values_list("prompt_id", flat=True)) & held_out
    assert held_out <= set(opted.rows.values_list("prompt_id", flat=True))
    assert opted.params["include_heldout"] is True
    assert Prompt.objects.filter(pk__in=held_out).count() == 2
