"""`--source` takes a comma list as well as the repeated flag, in every command that takes
sources (issue 12, point 9): one shared parser in config/commands.py."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from config.commands import split_names
from datasets_app.models import DatasetVersion, Source
from tests import factories
from training.models import Checkpoint
from workers.models import Job

pytestmark = pytest.mark.django_db


def test_split_names():
    assert split_names(["a,b", " c ", "a", ""]) == ["a", "b", "c"]
    assert split_names("a, b,,") == ["a", "b"]
    assert split_names(None) == [] and split_names([]) == []


@pytest.fixture
def two_sources():
    """Two sources of three prompts each, every prompt with one completion (judge-rated)."""
    from annotation.models import ATTRIBUTES, Completion, Rating

    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    judge = factories.judge("rater")
    made = []
    for name in ("alpha", "beta"):
        source = factories.source(name)
        for i in range(3):
            prompt = factories.prompt(source, question=f"{name} question {i}?")
            prompt.reference_answer = "yes"
            prompt.save(update_fields=["reference_answer"])
            for k, score in enumerate((4, 1)):
                completion = Completion.objects.create(
                    prompt=prompt, checkpoint=checkpoint, text=f"answer {k}", sample_index=k
                )
                Rating.objects.create(
                    completion=completion, judge=judge, **dict.fromkeys(ATTRIBUTES, score)
                )
        made.append(source)
    return made


def _prompt_ids(*sources: Source) -> set[int]:
    return {p.pk for s in sources for p in s.prompts.all()}


def test_curate_takes_a_comma_list_and_the_repeated_flag(two_sources):
    alpha, beta = two_sources
    call_command("curate", "--strategy", "best_vs_worst", "--name", "ab", "--source", "alpha,beta")
    call_command(
        "curate", "--strategy", "best_vs_worst", "--name", "ab", "--source", "alpha", "--source",
        str(beta.pk),
    )  # fmt: skip
    first, second = DatasetVersion.objects.filter(name="ab").order_by("version")
    for version in (first, second):
        assert set(version.rows.values_list("prompt_id", flat=True)) == _prompt_ids(alpha, beta)
        assert set(version.sources.all()) == {alpha, beta}
    assert first.checksum == second.checksum
    with pytest.raises(CommandError, match="no source named 'gamma'"):
        call_command(
            "curate", "--strategy", "best_vs_worst", "--name", "x", "--source", "alpha,gamma"
        )


def test_judge_takes_a_comma_list(two_sources):
    alpha, beta = two_sources
    call_command(
        "judge", "--judge", "oracle", "--mode", "answer", "--enqueue", "--source", "alpha,beta"
    )
    job = Job.objects.get(kind=Job.Kind.JUDGING)
    assert set(job.params["prompt_ids"]) == _prompt_ids(alpha, beta)
    with pytest.raises(CommandError, match="no source named 'gamma'"):
        call_command("judge", "--judge", "oracle", "--source", "alpha,gamma")


def test_generate_takes_a_comma_list_and_keeps_prompt_ids(two_sources):
    alpha, beta = two_sources
    Checkpoint.objects.create(name="base", model_path="tiny-llava")
    call_command("generate", "--checkpoint", "base", "--enqueue", "--source", "alpha,beta")
    job = Job.objects.get(kind=Job.Kind.GENERATION)
    assert set(job.params["prompt_ids"]) == _prompt_ids(alpha, beta)
    one = beta.prompts.first().pk
    call_command(
        "generate", "--checkpoint", "base", "--enqueue", "--source", "alpha,beta",
        "--prompt-ids", str(one),
    )  # fmt: skip
    assert Job.objects.filter(kind=Job.Kind.GENERATION).latest("id").params["prompt_ids"] == [one]
    with pytest.raises(CommandError, match="no prompts in the sources alpha, beta with those ids"):
        call_command(
            "generate", "--checkpoint", "base", "--enqueue", "--source", "alpha,beta",
            "--prompt-ids", "999999",
        )  # fmt: skip


def test_every_command_that_takes_sources_says_so_in_its_help(capsys):
    from django.core.management import get_commands, load_command_class

    takers = []
    for name, app in sorted(get_commands().items()):
        if app.startswith("django.") or app in ("rest_framework", "django_extensions"):
            continue
        parser = load_command_class(app, name).create_parser("manage.py", name)
        option = next((a for a in parser._actions if "--source" in a.option_strings), None)
        if option is None or name == "import_prompts":  # the one source to import into
            continue
        takers.append(name)
        assert option.default == [] and "commas" in option.help, name
    assert {"curate", "judge", "generate"} <= set(takers)
