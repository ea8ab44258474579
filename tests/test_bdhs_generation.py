"""BDHS on the tiny models (issue 16 point 1): masking image-token attention changes what the
model predicts, the noisy-image variant, reference-guided continuation, and a BDHS job whose
answers a `bdhs` dataset version pairs with the references, with no judge at all."""

from __future__ import annotations

import pytest
from PIL import Image

from training.core.generation import GenerationRequest, PromptInput, SamplingParams
from training.core.generation.core import chat_text
from training.core.generation.guided import (
    continue_batch,
    image_token_id,
    mask_image_attention,
    noisy_image,
)
from training.core.modeling import encode_prompts, load_policy

pytestmark = pytest.mark.slow


def _next_token_logits(policy, request, attention_mask=None, rho=0.0, seed=0):
    import torch

    text = chat_text(policy.processor, request, SamplingParams(k=1, temperature=0.0))
    inputs = encode_prompts(policy, [text], request.images)
    if rho:
        inputs["attention_mask"] = mask_image_attention(
            inputs["input_ids"],
            inputs["attention_mask"],
            image_token_id(policy.processor),
            rho,
            seed,
        )
    with torch.no_grad():
        return policy.model(**inputs).logits[0, -1].softmax(-1), inputs


def test_masking_the_image_tokens_changes_the_next_token_distribution(tiny_dir):
    policy = load_policy(str(tiny_dir), device="cpu")
    red, blue = (
        GenerationRequest("k", PromptInput("What colour is it?"), Image.new("RGB", (32, 32), c))
        for c in ("red", "blue")
    )
    seeing_red, inputs = _next_token_logits(policy, red)
    seeing_blue, _ = _next_token_logits(policy, blue)
    # With the image visible, its colour moves the prediction...
    assert (seeing_red - seeing_blue).abs().sum() > 1e-3
    blind_red, masked = _next_token_logits(policy, red, rho=1.0)
    blind_blue, _ = _next_token_logits(policy, blue, rho=1.0)
    # ...with every image token masked it cannot: the two images predict the same thing,
    assert (blind_red - blind_blue).abs().max() < 1e-5
    # and that differs from what the model predicts when it sees the image.
    assert (blind_red - seeing_red).abs().sum() > 1e-3
    image_positions = inputs["input_ids"] == image_token_id(policy.processor)
    assert int(masked["attention_mask"][image_positions].sum()) == 0
    assert bool((masked["attention_mask"][~image_positions] == 1).all())  # text untouched
    # rho in between hides about that share, the same share for the same seed.
    _, half = _next_token_logits(policy, red, rho=0.5, seed=3)
    _, again = _next_token_logits(policy, red, rho=0.5, seed=3)
    hidden = int((half["attention_mask"][image_positions] == 0).sum())
    assert 2 <= hidden <= 14 and bool((half["attention_mask"] == again["attention_mask"]).all())


def test_the_noisy_image_is_seeded_and_grows_with_its_steps():
    image = Image.new("RGB", (32, 32), "red")
    assert noisy_image(image, steps=0).tobytes() == image.tobytes()
    assert (
        noisy_image(image, steps=300, seed=1).tobytes()
        == noisy_image(image, steps=300, seed=1).tobytes()
    )
    assert (
        noisy_image(image, steps=300, seed=1).tobytes()
        != noisy_image(image, steps=300, seed=2).tobytes()
    )

    def distance(steps: int) -> float:
        a, b = image.tobytes(), noisy_image(image, steps=steps, seed=0).tobytes()
        return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)

    assert distance(50) < distance(500) < distance(1000)


def test_continuation_opens_the_answer_with_the_prefix_and_is_seeded(tiny_family_dir):
    policy = load_policy(str(tiny_family_dir), device="cpu")
    request = GenerationRequest(
        "p1", PromptInput("Is there a red shape in the image?"), Image.new("RGB", (64, 64), "red")
    )
    params = SamplingParams(k=1, temperature=0.7, max_new_tokens=4, seed=0)
    text = chat_text(policy.processor, request, params, prefill="Yes, there is")
    assert text.endswith("Yes, there is")  # the model writes on from the prefix
    assert text.startswith(chat_text(policy.processor, request, params)[:20])
    first = continue_batch(policy, request, ["Yes, there is", ""], params=params)
    again = continue_batch(policy, request, ["Yes, there is", ""], params=params)
    other = continue_batch(policy, request, ["Yes, there is", ""], params=params, attempt=1)
    assert len(first) == 2 and first == again and first != other
    if policy.model.config.model_type == "qwen2_5_vl":
        from training.core.generation import GenerationError

        # Its positions come from the image grid: the mask variant is refused, noise works.
        with pytest.raises(GenerationError, match="noisy-image variant"):
            continue_batch(policy, request, ["Yes"], params=params, rho=0.9)
        assert len(continue_batch(policy, request, ["Yes"], params=params, noise_steps=500)) == 1
    else:
        assert len(continue_batch(policy, request, ["Yes"], params=params, rho=0.9)) == 1


@pytest.mark.django_db
@pytest.mark.db_backend
def test_a_bdhs_job_and_the_bdhs_strategy_make_pairs_without_a_judge(tiny_dir, tmp_path):
    from annotation.models import Completion, JudgeCall, Rating
    from datasets_app.core.shapes import make_shapes
    from datasets_app.models import DatasetRow, Prompt
    from datasets_app.services import versions
    from datasets_app.services.imports import prompts_import
    from training.core.generation.bdhs import BdhsParams
    from training.models import Checkpoint
    from training.services import generation
    from workers.models import Job

    make_shapes(tmp_path / "pope", n=4, seed=9)
    pope = prompts_import(path=tmp_path / "pope" / "pope.parquet", source_name="p", fmt="pope")
    source = pope.source
    checkpoint = Checkpoint.objects.create(name="tiny", model_path=str(tiny_dir))
    params = SamplingParams(k=1, temperature=0.9, max_new_tokens=12, seed=0)
    bdhs = BdhsParams(rho=0.99, max_tries=3, similarity_threshold=0.95, max_new_tokens=6)
    job = generation.generation_launch(
        checkpoint=checkpoint,
        selection={"source_id": source.pk},
        params=params,
        bdhs=bdhs,
        enqueue=False,
    )
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    n = source.prompts.count()
    made = Completion.objects.filter(job=job)
    assert made.count() == n and {c.sampling["method"] for c in made} == {"bdhs"}
    assert all(1 <= c.sampling["tries"] <= 3 for c in made)
    assert job.metrics["completions"] == n and 0 <= job.metrics["guided_share"] <= 1
    # Run again: every prompt has its answer, nothing is added.
    rerun = generation.generation_launch(
        checkpoint=checkpoint,
        selection={"source_id": source.pk},
        params=params,
        bdhs=bdhs,
        enqueue=False,
    )
    generation.generation_run(job_id=rerun.pk)
    assert Completion.objects.filter(checkpoint=checkpoint).count() == n

    version = versions.dataset_version_build(
        name="bdhs-pairs",
        strategy="bdhs",
        params={"include_heldout": True},  # POPE prompts are test prompts
        selection={"source_id": source.pk},
        filters={"eval_fraction": 0.0},
    )
    rows = DatasetRow.objects.filter(version=version)
    assert 0 < rows.count() <= n and version.kind == "dpo"
    for row in rows:
        prompt = Prompt.objects.get(pk=row.prompt_id)
        assert row.chosen == prompt.reference_answer and row.rejected_completion.job == job
    assert not Rating.objects.exists() and not JudgeCall.objects.exists()  # no judge at all
    # BDHS needs references: a source without them is refused before a job exists.
    with pytest.raises(ValueError, match="reference answer"):
        Prompt.objects.filter(source=source).update(reference_answer="")
        generation.generation_launch(
            checkpoint=checkpoint,
            selection={"source_id": source.pk},
            params=params,
            bdhs=bdhs,
            enqueue=False,
        )
