"""The whole loop on the second tiny family (issue 15), at a smaller size than test_loop.py:
a Qwen2.5-VL start is built by the same import / curation / SFT services, then sampled,
rated, curated, trained (DPO with precomputed reference log-probs, rejection-sampling SFT,
SteerLM) and every checkpoint evaluated on held-out ScienceQA and POPE. It checks that the
loop works on another family end to end, not that this short run gains anything."""

from __future__ import annotations

import pytest

from training.core.modeling import check_policy
from training.models import EvaluationRun, LoopRun
from training.services import checkpoints
from training.services.loop import ROLES, LoopConfig, run_loop
from training.services.start import START_TRAINING, StartRecipe

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_loop_runs_end_to_end_on_a_qwen2_5_vl_start(settings, tmp_path):
    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    settings.START_CACHE_DIR = str(tmp_path / "start")
    start = StartRecipe(
        family="qwen2_5_vl",
        images=2000,
        training={**START_TRAINING, "max_steps": 300},
    )
    config = LoopConfig.new(
        eval_images=12, pool_images=40, rounds=1, k=2, dpo_steps=4, sft_steps=4, start=start
    )
    report = run_loop(config=config)
    print("\n".join(f"{n:<45} {s:6.1f} s  {d}" for n, s, d in report.stages))

    assert report.stages[0][0] == "the start (tiny-qwen2.5-vl (shapes SFT))"
    assert tuple(report.checkpoints) == ROLES[:4]  # one round: no dpo_round2
    for role, checkpoint in report.checkpoints.items():
        folder = checkpoints.checkpoint_location(checkpoint.model_path)
        assert check_policy(str(folder), adapter_path=None).model_type == "qwen2_5_vl", role
    assert report.checkpoints["dpo"].parent == report.checkpoints["start"]
    result = report.result
    assert result["checkpoints"]["start"]["name"] == "tiny-qwen2.5-vl (shapes SFT)"
    for role in ROLES[:4]:
        scores = result["checkpoints"][role]
        assert scores["pope"]["n"] == 72 and scores["scienceqa"]["n"] == 12, (role, scores)
    assert set(result["deltas"]) == set(ROLES[1:4])
    assert LoopRun.objects.get().status == LoopRun.Status.SUCCEEDED
    assert EvaluationRun.objects.filter(checkpoint__in=report.checkpoints.values()).count() == 8
