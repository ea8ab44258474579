"""Dataset versions: built from ratings, frozen, diffed; the curate command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from annotation.models import ATTRIBUTES, Completion, PairPick, Rating
from datasets_app.models import DatasetRow, DatasetVersion
from datasets_app.services import versions
from tests import factories
from training.models import Checkpoint

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


@pytest.fixture
def rated(shapes_source):
    """Three completions per prompt rated by one judge: sums 12, 6 and 3 (gap >= 2)."""
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    judge = factories.judge("oracle")
    for prompt in shapes_source.prompts.all():
        for i, score in enumerate((4, 2, 1)):
            completion = Completion.objects.create(
                prompt=prompt,
                checkpoint=checkpoint,
                text=f"answer {i}",
                sample_index=i,
                template="zero_shot_mc",
            )
            Rating.objects.create(
                completion=completion, judge=judge, **dict.fromkeys(ATTRIBUTES, score)
            )
    return shapes_source, judge


def _build(source, **extra):
    return versions.dataset_version_build(
        name="shapes-dpo",
        strategy=extra.pop("strategy", "best_vs_worst"),
        selection={"source_id": source.pk},
        **extra,
    )


def test_a_version_freezes_rows_with_the_user_turn_and_scores(rated):
    source, _ = rated
    version = _build(source)
    assert (version.version, version.kind, version.row_count) == (1, "dpo", 6)
    row = version.rows.first()
    assert row.chosen == "answer 0" and row.rejected == "answer 2" and row.margin == 9
    assert row.question.startswith("Given the question, please choose")  # zero_shot_mc turn
    assert row.chosen_scores["helpfulness"] == 4
    assert version.stats["splits"] == {"train": 6} and len(version.checksum) == 64
    assert list(version.sources.all()) == [source]


def test_editing_a_rating_later_never_changes_a_version(rated):
    source, _ = rated
    version = _build(source)
    before = list(version.rows.values_list("chosen", "rejected", "margin", "chosen_scores"))
    Rating.objects.update(helpfulness=0, correctness=0, coherence=0)
    after = list(version.rows.values_list("chosen", "rejected", "margin", "chosen_scores"))
    assert before == after


def test_a_rebuild_is_a_new_version_and_the_diff_names_the_changes(rated):
    source, _ = rated
    first = _build(source)
    prompt = source.prompts.first()
    best = Completion.objects.get(prompt=prompt, sample_index=0)
    Rating.objects.filter(completion=best).update(complexity=1)  # same pair, other scores
    gone = source.prompts.last()
    Rating.objects.filter(completion__prompt=gone).update(
        helpfulness=3, correctness=3, coherence=3, complexity=3, verbosity=3
    )
    second = _build(source)
    assert second.version == 2 and second.row_count == 5
    diff = versions.dataset_versions_diff(first, second)
    assert [r.prompt_id for r in diff["removed"]] == [gone.pk]
    assert [
        (a.chosen_scores["complexity"], b.chosen_scores["complexity"]) for a, b in diff["changed"]
    ] == [(4, 1)]
    assert not diff["added"] and diff["unchanged"] == 4
    assert first.checksum != second.checksum


def test_same_recipe_same_rows_same_checksum(rated):
    source, _ = rated
    assert _build(source).checksum == _build(source).checksum


def test_sft_and_human_pick_versions(rated, make_user):
    source, _ = rated
    sft = _build(source, strategy="rejection_sampling")
    assert sft.kind == "sft" and set(sft.rows.values_list("chosen", flat=True)) == {"answer 0"}
    prompt = source.prompts.first()
    ids = list(prompt.completions.order_by("sample_index").values_list("id", flat=True))
    for name in ("h1", "h2"):
        PairPick.objects.create(
            prompt=prompt, annotator=make_user(name), chosen_id=ids[1], rejected_id=ids[0]
        )
    picks = _build(source, strategy="human_pick")
    row = picks.rows.get()
    assert (row.chosen, row.rejected, row.margin) == ("answer 1", "answer 0", 2.0)


def test_a_recipe_without_rows_is_refused_and_saves_nothing(shapes_source):
    with pytest.raises(ValueError, match="makes no rows"):
        _build(shapes_source)
    assert DatasetVersion.objects.count() == 0 and DatasetRow.objects.count() == 0


def test_curate_command(rated, capsys):
    source, _ = rated
    call_command(
        "curate",
        strategy="best_vs_random_gap",
        name="cli",
        source=[source.name],
        param=["gap=3"],
        filter=["eval_fraction=0.5"],
    )
    version = DatasetVersion.objects.get(name="cli")
    assert version.params["gap"] == 3 and version.filters == {"eval_fraction": 0.5}
    assert "cli v1" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no source named"):
        call_command("curate", strategy="best_vs_worst", name="x", source=["nope"])
    with pytest.raises(CommandError, match="key=value"):
        call_command("curate", strategy="best_vs_worst", name="x", param=["gap"])


def test_the_build_page_previews_then_saves(client, curator, annotator, rated):
    from django.urls import reverse

    source, _ = rated
    url = reverse("datasets_app:version_new")
    form = {
        "name": "from-page",
        "strategy": "best_vs_random_gap",
        "params": '{"gap": 2}',
        "filters": '{"eval_fraction": 0.5}',
        "kinds": ["judge"],
        "combine": "mean",
        "source": source.pk,
        "seed": 0,
    }
    client.force_login(curator)
    preview = client.post(url, {**form, "preview": "1"}).content.decode()
    assert 'data-preview-rows="6"' in preview and DatasetVersion.objects.count() == 0
    bad = client.post(url, {**form, "params": "{gap: 2}", "save": "1"}).content.decode()
    assert "params must be a JSON object" in bad and DatasetVersion.objects.count() == 0
    saved = client.post(url, {**form, "save": "1"})
    version = DatasetVersion.objects.get()
    assert saved["Location"] == reverse("datasets_app:version", args=[version.pk])
    page = client.get(saved["Location"]).content.decode()
    assert 'data-rows="6"' in page and page.count("<svg") == 4  # margin, two lengths, sources
    second = _build(source)
    diff = client.get(reverse("datasets_app:version_diff", args=[second.pk, version.pk]))
    assert "data-added" in diff.content.decode()
    client.force_login(annotator)
    assert client.get(url).status_code == 403


def test_judge_answer_sft_trains_on_the_oracles_own_answers(shapes_source):
    from annotation.services import judging

    oracle = judging.judge_config_from_spec("oracle")
    job = judging.judge_launch(
        judge_config=oracle,
        selection={"source_id": shapes_source.pk},
        mode="answer",
        enqueue=False,
    )
    judging.judge_run(job_id=job.pk)
    version = versions.dataset_version_build(
        name="answers",
        strategy="judge_answer_sft",
        selection={"source_id": shapes_source.pk},
        answer_judge_id=oracle.pk,
    )
    assert version.row_count == 6 and version.selection["answer_judge_id"] == oracle.pk
    for row in version.rows.select_related("prompt"):
        letter = "ABCD"[row.prompt.answer_index]
        assert row.chosen == f"The answer is {letter}."


def test_scienceqa_reformatted_rewrites_long_answers_through_a_judge_once(
    shapes_source, settings, fake_openai
):
    from annotation.models import JudgeCall
    from annotation.services import judging

    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-test", fake_openai.base_url
    rewriter = judging.judge_config_from_spec("openai:gpt-4o-mini")
    recipe = dict(
        name="sqa-reformatted",
        strategy="scienceqa_reformatted",
        params={"max_chars": 20},
        selection={"source_id": shapes_source.pk},
        rewrite_judge_id=rewriter.pk,
    )
    first = versions.dataset_version_build(**recipe)
    calls = fake_openai.calls
    assert calls >= 1 and JudgeCall.objects.filter(mode="rewrite").count() == calls
    second = versions.dataset_version_build(**recipe)
    assert fake_openai.calls == calls  # the rewrites were kept
    assert first.checksum == second.checksum


def test_prompts_that_share_a_judge_answer_all_get_their_row(shapes_source, tmp_path):
    """Issue 12 point 7: the same items in two sources are answered once, under the first
    prompt; the answers are found by the call's content hash, so both sources get rows."""
    from annotation.models import JudgeCall
    from annotation.services import judging
    from datasets_app.services.imports import prompts_import

    copy = prompts_import(
        path=tmp_path / "shapes" / "scienceqa.parquet", source_name="sqa-copy", fmt="scienceqa"
    ).source
    oracle = judging.judge_config_from_spec("oracle")
    job = judging.judge_launch(
        judge_config=oracle,
        selection={"source_id": shapes_source.pk},
        mode="answer",
        enqueue=False,
    )
    judging.judge_run(job_id=job.pk)
    again = judging.judge_launch(
        judge_config=oracle, selection={"source_id": copy.pk}, mode="answer", enqueue=False
    )
    judging.judge_run(job_id=again.pk)  # every item is already answered: no new call
    assert JudgeCall.objects.filter(mode="answer").count() == 6
    both = list(shapes_source.prompts.values_list("id", flat=True)) + list(
        copy.prompts.values_list("id", flat=True)
    )
    version = versions.dataset_version_build(
        name="answers",
        strategy="judge_answer_sft",
        selection={"prompt_ids": both},
        answer_judge_id=oracle.pk,
    )
    assert version.row_count == 12 and "no judge answer" not in version.stats["dropped"]
    assert set(version.rows.values_list("prompt__source__name", flat=True)) == {"sqa", "sqa-copy"}
    for row in version.rows.select_related("prompt"):
        assert row.chosen == f"The answer is {'ABCD'[row.prompt.answer_index]}."


def test_an_answer_to_other_content_is_not_used(shapes_source):
    """An answer belongs to the content it was given: after the question changes, the old
    answer is not the answer to it."""
    from annotation.services import judging

    oracle = judging.judge_config_from_spec("oracle")
    job = judging.judge_launch(
        judge_config=oracle, selection={"source_id": shapes_source.pk}, mode="answer", enqueue=False
    )
    judging.judge_run(job_id=job.pk)
    changed = shapes_source.prompts.first()
    changed.question = "A question the judge never saw?"
    changed.save(update_fields=["question"])
    version = versions.dataset_version_build(
        name="answers",
        strategy="judge_answer_sft",
        selection={"source_id": shapes_source.pk},
        answer_judge_id=oracle.pk,
    )
    assert version.row_count == 5 and version.stats["dropped"] == {"no judge answer": 1}
    assert changed.pk not in set(version.rows.values_list("prompt_id", flat=True))


def test_an_unknown_answer_judge_is_a_clear_error(shapes_source):
    with pytest.raises(ValueError, match="no judge #999"):
        versions.dataset_version_build(
            name="answers",
            strategy="judge_answer_sft",
            selection={"source_id": shapes_source.pk},
            answer_judge_id=999,
        )


def test_rejection_sampling_reports_prompts_with_no_good_enough_answer(rated, capsys):
    """Issue 12 point 8: a prompt whose completions are all wrong gives no row, and the
    build says how many there were."""
    source, _ = rated
    wrong = source.prompts.first()
    Rating.objects.filter(completion__prompt=wrong).update(correctness=0)
    call_command("curate", strategy="rejection_sampling", name="rs", source=[source.name])
    version = DatasetVersion.objects.get(name="rs")
    assert version.row_count == 5 and wrong.pk not in {r.prompt_id for r in version.rows.all()}
    assert version.stats["dropped"] == {"no completion with correctness >= 3": 1}
    assert version.params["min_correctness"] == 3
    assert "dropped 1: no completion with correctness >= 3" in capsys.readouterr().out


def test_a_build_resolves_the_strategy_parameters_once(rated, monkeypatch):
    from datasets_app.core.curation import strategies

    calls: list[str] = []
    real = strategies.resolve_params

    def counting(name, params=None):
        calls.append(name)
        return real(name, params)

    monkeypatch.setattr(strategies, "resolve_params", counting)
    monkeypatch.setattr(versions, "resolve_params", counting, raising=False)
    source, _ = rated
    version = _build(source, params={"attributes": ["helpfulness", "correctness"]})
    assert calls == ["best_vs_worst"]
    assert version.params == {
        **real("best_vs_worst"),
        "attributes": ["helpfulness", "correctness"],
    }
    assert type(version.params) is dict and version.row_count == 6


def test_reference_sft_asks_each_question_as_its_ask_as_template_says(db, tmp_path):
    from datasets_app.core.shapes import make_shapes
    from datasets_app.services.imports import prompts_import
    from training.core.generation.templates import SHORT_ANSWER_SUFFIX

    make_shapes(tmp_path / "shapes", n=4, seed=1)
    source = prompts_import(
        path=tmp_path / "shapes" / "pope.parquet", source_name="pope", fmt="pope"
    ).source
    common = dict(
        strategy="reference_sft",
        selection={"source_id": source.pk},
        params={"include_heldout": True},  # POPE prompts are test prompts
    )
    bare = versions.dataset_version_build(name="as-written", **common)
    asked = versions.dataset_version_build(
        name="short", **{**common, "params": {"include_heldout": True, "ask_as": "short_answer"}}
    )
    assert bare.row_count == asked.row_count > 0
    assert not any(r.question.endswith(SHORT_ANSWER_SUFFIX) for r in bare.rows.all())
    assert all(r.question.endswith(SHORT_ANSWER_SUFFIX) for r in asked.rows.all())
    assert asked.params["ask_as"] == "short_answer"
    with pytest.raises(ValueError, match="ask_as must be '' or a prompt template"):
        versions.dataset_version_build(
            name="bad", **{**common, "params": {"include_heldout": True, "ask_as": "shout"}}
        )
    assert not DatasetVersion.objects.filter(name="bad").exists()
