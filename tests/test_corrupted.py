"""`corrupted` pairs (issue 16 point 2): a judge's rewrite, through the real OpenAI SDK and
the fake server, is kept as a JudgeCall so that a rebuild pays nothing; the oracle
corruption is the free default on the shapes world."""

from __future__ import annotations

import pytest

from annotation.models import JudgeCall
from datasets_app.core.shapes import make_shapes
from datasets_app.models import DatasetRow
from datasets_app.services import versions
from datasets_app.services.imports import prompts_import

pytestmark = [pytest.mark.django_db, pytest.mark.db_backend]


@pytest.fixture
def pope(tmp_path):
    make_shapes(tmp_path / "shapes", n=3, seed=2)
    return prompts_import(
        path=tmp_path / "shapes" / "pope.parquet", source_name="pope", fmt="pope"
    ).source


def _build(source, **extra):
    return versions.dataset_version_build(
        name="corrupt",
        strategy="corrupted",
        params={"include_heldout": True},
        selection={"source_id": source.pk},
        filters={"eval_fraction": 0.0},
        **extra,
    )


def test_the_free_oracle_corruption_swaps_each_yes_and_no(pope):
    version = _build(pope)
    rows = list(DatasetRow.objects.filter(version=version))
    assert len(rows) == pope.prompts.count() and not JudgeCall.objects.exists()
    assert all({r.chosen, r.rejected} == {"yes", "no"} for r in rows)
    assert {r.rater for r in rows} == {"oracle_corruption"}


def test_a_judges_rewrites_are_kept_and_a_rebuild_pays_nothing(pope, settings, fake_openai):
    from annotation.services import judging

    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_BASE_URL = fake_openai.base_url
    judge = judging.judge_config_from_spec("openai:gpt-4o-mini")
    first = _build(pope, rewrite_judge_id=judge.pk)
    n = pope.prompts.count()
    # POPE asks the same question of an image in several splits: one call per distinct text.
    calls = JudgeCall.objects.filter(mode=JudgeCall.Mode.REWRITE)
    assert 0 < calls.count() <= n and len(fake_openai.requests) == calls.count()
    assert "CORRECT ANSWER:" in fake_openai.requests[0].prompt
    rows = DatasetRow.objects.filter(version=first)
    assert rows.count() == n and {r.rater for r in rows} == {"rewrite"}
    assert all(r.rejected.startswith("Analysis:") for r in rows)  # the fake's rewrite
    second = _build(pope, rewrite_judge_id=judge.pk)
    assert len(fake_openai.requests) == calls.count()  # nothing asked again
    assert second.checksum == first.checksum
