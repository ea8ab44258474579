"""Judge audits (issue 18.2): position bias from a reversed order, self-consistency from
repeats, parse failures; every call through the cache, the estimate refused over the cap."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from annotation.core.judges import audit
from annotation.core.judges.base import ATTRIBUTES, CompletionRating, JudgeResult
from annotation.selectors import judge_card

# --- the measures ----------------------------------------------------------------------------


def _rating(value: int, **others: int) -> dict[str, float]:
    return {a: float(others.get(a, value)) for a in ATTRIBUTES}


def test_a_judge_that_rates_by_place_flips_its_picks_and_an_order_blind_one_never_does():
    right, wrong = _rating(4), _rating(1)
    blind = [([right, wrong, wrong], [right, wrong, wrong])] * 3
    assert audit.position_bias(blind).flip_rate == 0
    assert audit.position_bias(blind).mean_abs_delta["correctness"] == 0
    # Always the first place best: in reverse order, mapped back, the last one is.
    first = [([right, wrong, wrong], [wrong, wrong, right])] * 3
    found = audit.position_bias(first)
    assert found.flip_rate == 1 and found.best_flips == found.worst_flips == 3
    assert found.mean_abs_delta["helpfulness"] == pytest.approx(2.0)  # (3 + 0 + 3) / 3


def test_reversing_an_item_and_mapping_its_ratings_back():
    from annotation.core.judges.base import JudgeItem

    item = JudgeItem(key="p:1,2,3", question="q", completions=("a", "b", "c"))
    order = audit.reversed_order(3)
    turned = audit.permuted_item(item, order)
    assert turned.completions == ("c", "b", "a") and turned.key != item.key
    assert audit.mapped_back([{"x": 3}, {"x": 2}, {"x": 1}], order) == [
        {"x": 1},
        {"x": 2},
        {"x": 3},
    ]
    with pytest.raises(ValueError, match="not a permutation"):
        audit.permuted_item(item, (0, 0, 1))


def test_krippendorffs_alpha_by_hand():
    assert audit.krippendorff_alpha_interval([[1, 1], [2, 2], [4, 4]]) == 1.0
    # Values 1, 2, 2, 1: D_o = 1, D_e = 2/3, so alpha = 1 - 1.5.
    assert audit.krippendorff_alpha_interval([[1, 2], [2, 1]]) == pytest.approx(-0.5)
    assert audit.krippendorff_alpha_interval([[3, 3], [3, 3]]) is None  # no variation
    assert audit.krippendorff_alpha_interval([[3]]) is None


# --- the command, on shapes with the oracle and with fakes ------------------------------------


@pytest.fixture
def shapes(db, settings, tmp_path, tiny_dir):
    """20 shapes ScienceQA prompts, each answered once per option by a checkpoint."""
    from annotation.models import Completion
    from datasets_app.core.shapes import make_shapes
    from datasets_app.services.imports import prompts_import
    from training.core.evaluation.parsing import LETTERS
    from training.models import Checkpoint

    settings.MEDIA_ROOT = tmp_path / "media"
    make_shapes(tmp_path / "shapes", n=20, seed=11)
    source = prompts_import(
        path=tmp_path / "shapes" / "scienceqa.parquet", source_name="shapes", fmt="scienceqa"
    ).source
    base = Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    Completion.objects.bulk_create(
        Completion(
            prompt=prompt,
            checkpoint=base,
            text=f"The answer is {LETTERS[i]}.",
            template="zero_shot_mc",
            sample_index=i,
        )
        for prompt in source.prompts.all()
        for i in range(len(prompt.choices))
    )
    return source


class FirstPlaceJudge:
    """Rates whatever it is shown first best, the rest worst: pure position bias."""

    provider, model = "local", "first-place"

    def __init__(self) -> None:
        self.calls = 0

    def rate(self, item):
        self.calls += 1
        ratings = [
            CompletionRating(*([4] * 5 if i == 0 else [1] * 5))
            for i in range(len(item.completions))
        ]
        return JudgeResult(tuple(ratings), reasoning="", raw="{}")


def _fake(monkeypatch, judge) -> object:
    from annotation.models import JudgeConfig
    from annotation.services import audits

    monkeypatch.setattr(audits, "build_judge", lambda config: judge)
    monkeypatch.setattr(audits, "judge_config_check", lambda **kw: None)
    return JudgeConfig.objects.create(
        name=f"fake {judge.model}", provider=judge.provider, model=judge.model
    )


def _audit_json(capsys, *args) -> dict:
    call_command("judge_audit", *args, "--json")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_oracle_is_order_blind_and_consistent(shapes, capsys):
    from annotation.models import JudgeAudit, JudgeCall

    out = _audit_json(
        capsys, "--judge", "oracle", "--source", "shapes", "--position", "--repeats", "3"
    )
    assert set(out) == {
        "items",
        "position_flip_rate",
        "mean_abs_delta",
        "self_alpha",
        "parse_failure_rate",
    }
    assert out["items"] == 20 and out["position_flip_rate"] == 0
    assert set(out["mean_abs_delta"]) == set(ATTRIBUTES) == set(out["self_alpha"])
    assert all(v == 0 for v in out["mean_abs_delta"].values())
    assert out["self_alpha"]["correctness"] == 1.0 and out["parse_failure_rate"] == 0
    calls = JudgeCall.objects.count()
    assert calls == 20 * (1 + 1 + 2)  # plain, reversed, two more repeats
    # Audited again: every call comes from the cache.
    _audit_json(capsys, "--judge", "oracle", "--source", "shapes", "--position", "--repeats", "3")
    assert JudgeCall.objects.count() == calls
    latest = JudgeAudit.objects.first()
    assert latest.result["calls"] == 0 and latest.result["cached_calls"] == calls
    # Its ratings agree with the truth: the right letter scores above every wrong one.
    call_command("judge", "--judge", "oracle", "--source", "shapes")
    card = judge_card(latest.judge)
    assert card["truth"]["rate"] == 1.0 and card["truth"]["pairs"] > 0
    assert card["humans"] is None  # no annotator rated these


def test_a_judge_that_prefers_the_first_place_is_caught(
    shapes, capsys, monkeypatch, client, staff_user
):
    from django.urls import reverse

    judge = FirstPlaceJudge()
    config = _fake(monkeypatch, judge)
    out = _audit_json(capsys, "--judge", "local:first-place", "--source", "shapes", "--position")
    assert out["position_flip_rate"] == 1.0 and out["items"] == 20
    assert out["mean_abs_delta"]["helpfulness"] > 1
    assert all(v is None for v in out["self_alpha"].values())  # no repeats asked
    assert judge.calls == 40
    assert config.audits.count() == 1

    # Debiased: the first and the last completion were best in one order and worst in the
    # other, so their stored rating is the mean, 2.5 rounded half up; a middle one stays
    # 1 in both orders. Nothing is asked again.
    from annotation.models import Rating

    call_command(
        "judge_audit", "--judge", "local:first-place", "--source", "shapes", "--position",
        "--debias",
    )  # fmt: skip
    ratings = Rating.objects.filter(judge=config)
    assert ratings.count() == sum(len(p.choices) for p in shapes.prompts.all())
    for prompt in shapes.prompts.all():
        mine = sorted(ratings.filter(completion__prompt=prompt), key=lambda r: r.completion_id)
        assert [r.helpfulness for r in mine] == [3] + [1] * (len(mine) - 2) + [3]
    assert judge.calls == 40

    # The judge's page carries the card; the list links it.
    client.force_login(staff_user)
    listing = client.get(reverse("annotation:judges")).content.decode()
    assert reverse("annotation:judge_detail", args=[config.pk]) in listing
    page = client.get(reverse("annotation:judge_detail", args=[config.pk])).content.decode()
    assert 'data-metric="position_flip_rate">1.000' in page
    assert "best flipped on 20, worst on 20 of 20 items" in page


def test_an_audit_over_its_cost_cap_is_refused_before_any_call(shapes, monkeypatch):
    from annotation.models import JudgeAudit, JudgeCall

    judge = FirstPlaceJudge()
    judge.provider, judge.model = "openai", "gpt-4o"  # priced
    _fake(monkeypatch, judge)
    with pytest.raises(CommandError, match=r"about \$0\.\d+ at gpt-4o's price: over --max-cost"):
        call_command(
            "judge_audit", "--judge", "openai:gpt-4o", "--source", "shapes",
            "--position", "--repeats", "3", "--max-cost", "0.001",
        )  # fmt: skip
    assert judge.calls == 0 and not JudgeCall.objects.exists() and not JudgeAudit.objects.exists()
    with pytest.raises(CommandError, match="nothing to measure"):
        call_command("judge_audit", "--judge", "oracle", "--source", "shapes")


# --- panels -----------------------------------------------------------------------------------


def test_a_panels_scores_are_its_members_mean_or_median_rounded_half_up():
    from annotation.core.judges import panel

    a, b, c = _rating(4), _rating(1), _rating(2, correctness=4)
    assert panel.combine([a, b], "mean")["helpfulness"] == 3  # 2.5 rounds up
    assert panel.combine([a, b, c], "median") == _rating(2, correctness=4)
    assert panel.parse_panel_model("median:8,3") == ("median", (8, 3))
    assert panel.panel_model("mean", [8, 3, 8]) == "mean:3,8"
    for bad, message in (
        ("mode:1,2", "mean or median"),
        ("mean:1", "at least 2"),
        ("mean:x", "ids"),
    ):
        with pytest.raises(ValueError, match=message):
            panel.parse_panel_model(bad)


def test_a_panel_rates_through_its_members_and_curates_like_any_judge(
    shapes, capsys, monkeypatch, client, staff_user
):
    from django.urls import reverse

    from annotation.core.judges import panel
    from annotation.models import JudgeCall, JudgeConfig, Rating
    from annotation.services import judging
    from datasets_app.services import versions

    first = FirstPlaceJudge()
    oracle = judging.judge_config_from_spec("oracle")
    fake = JudgeConfig.objects.create(name="first place", provider="local", model="first-place")
    real_build = judging.build_judge
    monkeypatch.setattr(
        judging, "build_judge", lambda c, **kw: first if c.pk == fake.pk else real_build(c, **kw)
    )
    real_check = judging.judge_config_check
    monkeypatch.setattr(
        judging,
        "judge_config_check",
        lambda **kw: None if kw.get("model") == "first-place" else real_check(**kw),
    )
    with pytest.raises(CommandError, match="no judge with id 999"):
        call_command("judge", "--judge", f"panel:mean:{oracle.pk},999", "--source", "shapes")
    call_command("judge", "--judge", f"panel:mean:{fake.pk},{oracle.pk}", "--source", "shapes")
    the_panel = JudgeConfig.objects.get(provider="panel")
    assert the_panel.model == f"mean:{min(oracle.pk, fake.pk)},{max(oracle.pk, fake.pk)}"
    completions = sum(len(p.choices) for p in shapes.prompts.all())
    for judge in (oracle, fake, the_panel):
        assert Rating.objects.filter(judge=judge).count() == completions
    for rating in Rating.objects.filter(judge=the_panel)[:10]:
        members = Rating.objects.filter(completion=rating.completion, judge__in=[oracle, fake])
        expected = panel.combine([{a: getattr(r, a) for a in ATTRIBUTES} for r in members], "mean")
        assert {a: getattr(rating, a) for a in ATTRIBUTES} == expected
    # A second run: the members' calls come from the cache, nothing changes.
    calls, asked = JudgeCall.objects.count(), first.calls
    call_command("judge", "--judge", f"panel:mean:{oracle.pk},{fake.pk}", "--source", "shapes")
    assert JudgeCall.objects.count() == calls and first.calls == asked
    assert JudgeConfig.objects.filter(provider="panel").count() == 1

    # Curated by the panel as by any judge.
    version = versions.dataset_version_build(
        name="by-panel",
        strategy="best_vs_worst",
        selection={"source_id": shapes.pk},
        rater_selection={"raters": [f"judge:{the_panel.pk}"], "kinds": ["judge"]},
    )
    assert version.rows.exists()
    client.force_login(staff_user)
    page = client.get(reverse("annotation:judge_detail", args=[the_panel.pk])).content.decode()
    assert "Members&#x27; agreement" in page or "Members' agreement" in page
    assert page.count(reverse("annotation:judge_detail", args=[oracle.pk])) == 1


def test_a_panel_called_live_combines_its_members_answers():
    from annotation.core.judges.base import JudgeItem, TextResult, Usage
    from annotation.core.judges.panel import PanelJudge

    class Reviewer:
        def __init__(self, model: str, line: str) -> None:
            self.model, self.line = model, line

        def complete(self, prompt, image=None, image_mime="image/png"):
            return TextResult(f"{self.line}\nbecause", Usage(10, 5))

    item = JudgeItem(key="k", question="q", completions=("a", "b", "c"))
    first, second = FirstPlaceJudge(), FirstPlaceJudge()
    second.rate = lambda it: JudgeResult(
        tuple(CompletionRating(*([2] * 5)) for _ in it.completions), reasoning="", raw="{}"
    )
    rated = PanelJudge([first, second], "mean").rate(item)
    assert [r.helpfulness for r in rated.ratings] == [3, 2, 2]  # (4+2)/2, (1+2)/2 up, ...
    review = PanelJudge([Reviewer("a", "8 6"), Reviewer("b", "6 3")], "mean").complete("p")
    assert review.text.splitlines()[0] == "7 4.5" and review.usage == Usage(20, 10)
    with pytest.raises(Exception, match="no 'X Y' first line"):
        PanelJudge([Reviewer("a", "8 6"), Reviewer("b", "fine")], "median").complete("p")


@pytest.mark.django_db
def test_an_evaluation_can_take_a_panel_as_its_judge():
    from annotation.core.judges.panel import PanelJudge
    from annotation.models import JudgeConfig
    from annotation.services import judging

    oracle = judging.judge_config_from_spec("oracle")
    other = judging.judge_config_get_or_create(provider="oracle", model="rules-v2")
    panel = judging.judge_config_from_spec(f"panel:median:{oracle.pk},{other.pk}")
    built = judging.build_judge(JudgeConfig.objects.get(pk=panel.pk))
    assert isinstance(built, PanelJudge) and len(built.members) == 2
