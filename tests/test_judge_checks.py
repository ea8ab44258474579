"""A judge is checked before its configuration is saved or a job is queued: the key, the
model name, a local checkpoint's config. A refused judge leaves nothing behind, on the page
and from the shell alike (issue 12, point 5)."""

from __future__ import annotations

import html

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation.forms import CampaignForm
from annotation.models import ATTRIBUTES, JudgeConfig, Rating
from annotation.services import judging
from tests import factories
from workers.models import Job

pytestmark = pytest.mark.django_db


def _form(**changes) -> dict:
    return {
        "judge": "oracle",
        "prompt_version": "v1",
        "temperature": 0,
        "k_per_call": 4,
        "concurrency": 4,
        **changes,
    }


def _tiny_checkpoint(tiny_dir, folder) -> None:
    import shutil

    shutil.copytree(tiny_dir, folder)


@pytest.mark.parametrize(
    ("judge", "keys", "message"),
    [
        ("local:/does/not/exist", {}, "local judge: no checkpoint folder /does/not/exist"),
        ("openai:gpt-4o", {"OPENAI_API_KEY": ""}, "OPENAI_API_KEY is not set"),
        ("gemini:gemini-2.5-flash", {"GEMINI_API_KEY": ""}, "GEMINI_API_KEY"),
        ("openai:gpt 4o; rm -rf", {"OPENAI_API_KEY": "sk-test"}, "is not a model name"),
        ("openai:", {"OPENAI_API_KEY": "sk-test"}, "the openai judge needs a model: openai:MODEL"),
    ],
)
def test_the_page_refuses_a_judge_that_cannot_be_called_and_saves_nothing(
    client, staff_user, shapes_source, settings, judge, keys, message
):
    for name, value in keys.items():
        setattr(settings, name, value)
    client.force_login(staff_user)
    response = client.post(reverse("annotation:judge"), _form(judge=judge))
    assert response.status_code == 200
    assert message in response.context["form"].errors["judge"][0]  # on the field itself
    assert message in html.unescape(response.content.decode())
    assert JudgeConfig.objects.count() == 0 and Job.objects.count() == 0


def test_the_page_refuses_a_base_url_that_is_not_http(client, staff_user, settings):
    settings.OPENAI_API_KEY = "sk-test"
    client.force_login(staff_user)
    response = client.post(
        reverse("annotation:judge"), _form(judge="openai:m", base_url="file:///etc/passwd")
    )
    assert "is not an http(s) URL" in response.context["form"].errors["judge"][0]
    assert JudgeConfig.objects.count() == 0 and Job.objects.count() == 0


@pytest.mark.parametrize(
    ("judge", "message"),
    [
        ("local:/does/not/exist", "no checkpoint folder"),
        ("openai:gpt-4o-mini", "OPENAI_API_KEY is not set"),
    ],
)
def test_the_command_refuses_the_same_and_creates_nothing(shapes_source, settings, judge, message):
    settings.OPENAI_API_KEY = ""
    with pytest.raises(CommandError, match=message):
        call_command("judge", judge=judge, source="sqa")
    assert JudgeConfig.objects.count() == 0 and Job.objects.count() == 0


def test_a_local_folder_needs_a_config_that_transformers_loads(tmp_path, settings, tiny_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"has no config\.json"):
        judging.judge_config_from_spec(f"local:{empty}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ValueError, match="does not load"):
        judging.judge_config_from_spec(f"local:{broken}")
    not_json = tmp_path / "not-json"
    not_json.mkdir()
    (not_json / "config.json").write_text("this is not json")
    with pytest.raises(ValueError, match="does not load"):
        judging.judge_config_from_spec(f"local:{not_json}")
    assert JudgeConfig.objects.count() == 0

    text_only = tmp_path / "text-only"  # a language model alone cannot judge images
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2
    ).save_pretrained(text_only)
    with pytest.raises(ValueError, match="does not load"):
        judging.judge_config_from_spec(f"local:{text_only}")

    _tiny_checkpoint(tiny_dir, tmp_path / "good")
    assert judging.judge_config_from_spec(f"local:{tmp_path / 'good'}").provider == "local"
    # A folder under CHECKPOINT_ROOT is named relative to it.
    _tiny_checkpoint(tiny_dir, settings.CHECKPOINT_ROOT / "judges" / "tiny")
    assert judging.judge_config_from_spec("local:judges/tiny").model == "judges/tiny"


def test_a_launch_checks_a_saved_judge_again(shapes_source, tmp_path):
    """A configuration saved earlier (before these checks, or whose folder is gone since)
    is refused before a job."""
    gone = JudgeConfig.objects.create(name="gone", provider="local", model=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="no checkpoint folder"):
        judging.judge_launch(
            judge_config=gone, selection={"source_id": shapes_source.pk}, enqueue=False
        )
    assert Job.objects.count() == 0


def test_dropdowns_offer_only_judges_that_were_used_or_can_be_called(settings, tmp_path):
    from annotation.selectors import judge_config_choices

    settings.OPENAI_API_KEY, settings.GEMINI_API_KEY = "", ""
    oracle = factories.judge("oracle")
    used = JudgeConfig.objects.create(name="gemini, key since unset", provider="gemini", model="g")
    Rating.objects.create(
        completion=factories.completion(), judge=used, **dict.fromkeys(ATTRIBUTES, 2)
    )
    # Left by refused launches before these checks: never used, and not callable now.
    JudgeConfig.objects.create(name="bad path", provider="local", model="/does/not/exist")
    no_key = JudgeConfig.objects.create(name="no key", provider="openai", model="gpt-4o")
    assert list(judge_config_choices()) == [used, oracle]
    assert list(CampaignForm().fields["suggestion_judge"].queryset) == [used, oracle]
    from datasets_app.forms import VersionForm
    from training.forms import EvaluationForm

    for field in ("answer_judge", "rewrite_judge"):
        assert list(VersionForm().fields[field].queryset) == [used, oracle]
    assert list(EvaluationForm().fields["judge"].queryset) == [used, oracle]
    settings.OPENAI_API_KEY = "sk-test"  # the row was fine, only the key was missing
    assert no_key in judge_config_choices()


def test_an_existing_configuration_is_found_without_a_key(settings):
    """Naming a judge to look up its ratings or answers needs no key; launching it does."""
    settings.OPENAI_API_KEY = "sk-test"
    first = judging.judge_config_from_spec("openai:gpt-4o-mini")
    settings.OPENAI_API_KEY = ""
    assert judging.judge_config_from_spec("openai:gpt-4o-mini") == first
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        judging.judge_config_from_spec("openai:gpt-4o")
