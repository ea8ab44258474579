"""Conversations of several turns with several images (issue 15 points 3 and 4): a 3-turn
conversation with 2 images imports, generates, is rated by a judge through the real SDK
against the fake server, exports in TRL's layout, trains a DPO step from the export
unchanged, and shows on the annotation page with its earlier turns and images inline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.urls import reverse
from PIL import Image

from annotation.models import Completion, Rating
from datasets_app.core.conversation import (
    ConversationInvalid,
    from_llava,
    from_messages,
    prompt_messages,
)
from datasets_app.models import Prompt, PromptImage, Source
from datasets_app.services.imports import ImportRejected, prompts_import
from tests.fake_judge_servers import expected_scores
from tests.test_browser import SHOTS, _log_in
from tests.test_browser import page as page
from training.models import Checkpoint

TURNS = [
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "What shape is in this picture?"}],
    },
    {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "Is the shape here the same?"}],
    },
]
LLAVA = [
    {"from": "human", "value": "<image>\nDescribe the picture."},
    {"from": "gpt", "value": "A blue square on white."},
    {"from": "human", "value": "Now this one: <image>\nHow many shapes are there?"},
    {"from": "gpt", "value": "Two."},
]


def _png(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _write(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in (("red.png", "red"), ("blue.png", "blue"), ("green.png", "green")):
        (folder / name).write_bytes(_png(colour))
    path = folder / "conversations.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --- the layout, without a database ---------------------------------------------------


def test_both_file_layouts_read_to_the_same_conversation():
    trl = from_messages(TURNS, 2)
    assert [t["role"] for t in trl.turns] == ["user", "assistant"]
    assert trl.question == "Is the shape here the same?" and trl.final_images == 1
    assert trl.images == 2 and trl.answer == ""
    llava = from_llava(LLAVA, 2)
    assert llava.answer == "Two." and llava.question == "Now this one: How many shapes are there?"
    assert llava.turns[0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Describe the picture."},
    ]
    # The whole prompt again, as generation and the export lay it out: images before text.
    messages = prompt_messages(trl.turns, trl.question, 2)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [p["type"] for p in messages[-1]["content"]] == ["image", "text"]
    # A conversation that names no image gets the row's images in its first user turn.
    plain = from_messages([{"role": "user", "content": "Compare them."}], 2)
    assert plain.final_images == 2 and plain.turns == []


@pytest.mark.parametrize(
    ("messages", "images", "message"),
    [
        (TURNS, 3, "has 2 image places but the row has 3 images"),
        ([TURNS[1], TURNS[1]], 0, "must end with the user turn"),
        ([{"role": "robot", "content": "hi"}], 0, "needs a role of"),
        ([TURNS[0], {"role": "system", "content": "late"}, TURNS[2]], 2, "system turn"),
        ([{"role": "user", "content": [{"type": "video"}]}], 0, "content part must be of type"),
    ],
)
def test_a_conversation_that_cannot_be_read_says_why(messages, images, message):
    with pytest.raises(ConversationInvalid, match=message):
        from_messages(messages, images)


# --- import ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.db_backend
def test_a_three_turn_conversation_with_two_images_imports_with_every_turn_and_image(tmp_path):
    path = _write(
        tmp_path / "data",
        [
            {"prompt": TURNS, "images": ["red.png", "blue.png"], "subject": "shapes"},
            {"conversations": LLAVA, "images": ["green.png", "blue.png"]},
            {"question": "A plain single-turn prompt", "image": "red.png"},
        ],
    )
    outcome = prompts_import(path=path, source_name="convos", fmt="prompts")
    assert outcome.created == 3
    trl, llava, single = Prompt.objects.order_by("id")
    assert trl.turns == TURNS[:2] and trl.question == "Is the shape here the same?"
    assert trl.image_total == 2 and trl.more_images.get().position == 1
    assert trl.image_sha256 != trl.more_images.get().image_sha256  # red, then blue
    assert llava.reference_answer == "Two." and len(llava.turns) == 2
    assert single.turns == [] and single.image_total == 1
    # Re-importing adds nothing: the conversation and its images are the prompt's identity.
    again = prompts_import(path=path, source_name="convos", fmt="prompts")
    assert again.created == 0 and again.duplicates == 3


@pytest.mark.django_db
@pytest.mark.db_backend
def test_too_many_images_or_pixels_is_a_row_error_and_nothing_is_written(tmp_path, settings):
    settings.IMPORT_MAX_PROMPT_IMAGES = 2
    settings.IMPORT_MAX_PROMPT_PIXELS = 64 * 48 * 2
    path = _write(
        tmp_path / "data",
        [
            {"prompt": TURNS, "images": ["red.png", "blue.png"]},  # fits exactly
            {"question": "Three?", "images": ["red.png", "blue.png", "green.png"]},
            {"prompt": TURNS[:1], "images": ["red.png"]},  # fits
            {"prompt": TURNS, "images": ["red.png"]},  # one image for two places
        ],
    )
    with pytest.raises(ImportRejected) as info:
        prompts_import(path=path, source_name="convos", fmt="prompts")
    errors = {e["row"]: e for e in info.value.parsed.report}
    assert set(errors) == {2, 4}
    assert "at most 2 (IMPORT_MAX_PROMPT_IMAGES)" in errors[2]["error"]
    assert errors[2]["field"] == "images" and errors[4]["field"] == "prompt"
    assert not Source.objects.exists() and not PromptImage.objects.exists()
    settings.IMPORT_MAX_PROMPT_IMAGES = 16
    settings.IMPORT_MAX_PROMPT_PIXELS = 64 * 48  # two 64x48 images are too many pixels
    with pytest.raises(ImportRejected, match="IMPORT_MAX_PROMPT_PIXELS"):
        prompts_import(path=path, source_name="convos", fmt="prompts")


# --- generation, judging, export, training --------------------------------------------


@pytest.fixture
def conversation(db, tmp_path) -> Prompt:
    path = _write(tmp_path / "data", [{"prompt": TURNS, "images": ["red.png", "blue.png"]}])
    prompts_import(path=path, source_name="convos", fmt="prompts")
    return Prompt.objects.get()


def _answers(n: int) -> list[str]:
    """n answers that the fake judge scores differently (distinct sums)."""
    texts, sums = [], set()
    for i in range(100):
        text = f"No, this one is a blue shape ({i})."
        total = sum(expected_scores(text).values())
        if total not in sums:
            texts.append(text)
            sums.add(total)
        if len(texts) == n:
            return texts
    raise AssertionError("no distinct scores")


@pytest.fixture
def answered(conversation) -> Prompt:
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    for i, text in enumerate(_answers(2)):
        Completion.objects.create(
            prompt=conversation, checkpoint=checkpoint, text=text, sample_index=i
        )
    return conversation


@pytest.mark.django_db
@pytest.mark.db_backend
@pytest.mark.slow
def test_generation_answers_the_final_turn_with_every_earlier_turn_and_image(
    conversation, tiny_family_dir
):
    from training.core.generation import SamplingParams
    from training.core.generation.core import TransformersBackend, chat_text
    from training.core.modeling import load_policy
    from training.services import generation

    checkpoint = Checkpoint.objects.create(name="tiny", model_path=str(tiny_family_dir))
    params = SamplingParams(k=2, temperature=0.7, max_new_tokens=4, seed=0)
    job = generation.generation_launch(
        checkpoint=checkpoint,
        selection={"source_id": conversation.source_id},
        params=params,
        enqueue=False,
    )
    generation.generation_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert Completion.objects.filter(prompt=conversation).count() == 2
    (request,) = generation._requests([conversation.pk])
    assert len(request.images) == 2 and len(request.turns) == 2
    policy = load_policy(str(tiny_family_dir), device="cpu")
    text = chat_text(policy.processor, request, params)
    assert text.index("What shape") < text.index("A red circle.") < text.index("the same?")
    backend = TransformersBackend(policy)
    exact = policy.processor(text=[text], images=request.images, add_special_tokens=False)
    assert backend.prompt_tokens(request, params) == len(exact["input_ids"][0])


@pytest.mark.django_db
@pytest.mark.db_backend
def test_the_judge_is_sent_the_whole_conversation_and_every_image(answered, settings, fake_openai):
    from annotation.services import judging

    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_BASE_URL = fake_openai.base_url
    config = judging.judge_config_from_spec("openai:gpt-4o-mini")
    assert config.prompt_version == "v2"
    job = judging.judge_launch(
        judge_config=config, selection={"source_id": answered.source_id}, enqueue=False
    )
    judging.judge_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    (request,) = fake_openai.requests
    assert [data for _, data in request.images] == [
        answered.image.open("rb").read(),
        answered.more_images.get().image.open("rb").read(),
    ]
    prompt = request.prompt
    assert "CONVERSATION SO FAR" in prompt
    assert "USER: [image 1] What shape is in this picture?" in prompt
    assert "ASSISTANT: A red circle." in prompt
    assert "IMAGES WITH THE QUESTION: image 2" in prompt
    assert prompt.index("ASSISTANT: A red circle.") < prompt.index("QUESTION:\nIs the shape")
    ratings = Rating.objects.filter(judge=config).select_related("completion")
    assert {r.completion.text: r.helpfulness for r in ratings} == {
        text: expected_scores(text)["helpfulness"] for text in _answers(2)
    }
    # The single-image wording would hide the earlier turns: it refuses the item instead.
    v1 = judging.judge_config_from_spec("openai:gpt-4o-mini", prompt_version="v1")
    with pytest.raises(ValueError, match=r"1 selected prompts are conversations.*prompt v2"):
        judging.judge_launch(
            judge_config=v1, selection={"source_id": answered.source_id}, enqueue=False
        )
    with pytest.raises(ValueError, match="judge's own answers use a single-turn wording"):
        judging.judge_launch(
            judge_config=config,
            selection={"source_id": answered.source_id},
            mode="answer",
            enqueue=False,
        )
    assert len(fake_openai.requests) == 1  # nothing was sent for either


@pytest.fixture
def export(answered, tmp_path) -> Path:
    from annotation.models import ATTRIBUTES
    from datasets_app.services import exports, versions
    from tests import factories

    judge = factories.judge("oracle")
    for completion, score in zip(Completion.objects.order_by("id"), (4, 1), strict=True):
        Rating.objects.create(
            completion=completion, judge=judge, **dict.fromkeys(ATTRIBUTES, score)
        )
    version = versions.dataset_version_build(
        name="convo-pairs", strategy="best_vs_worst", selection={"source_id": answered.source_id}
    )
    exports.dataset_version_export(version=version, out_dir=tmp_path / "export")
    return tmp_path / "export" / "train.parquet"


@pytest.mark.django_db
@pytest.mark.db_backend
def test_the_export_holds_every_earlier_turn_and_every_image_in_order(answered, export):
    import datasets

    row = datasets.load_dataset("parquet", data_files=str(export), cache_dir=str(export.parent))[
        "train"
    ][0]
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    parts = [p["type"] for m in row["prompt"] for p in m["content"]]
    assert parts == ["image", "text", "text", "image", "text"]
    assert row["prompt"][1]["content"][0]["text"] == "A red circle."
    colours = [image.convert("RGB").getpixel((0, 0)) for image in row["images"]]
    assert colours == [(255, 0, 0), (0, 0, 255)]  # red, then blue: the turns' order
    assert row["chosen"][0]["content"][0]["text"] == _answers(2)[0]


@pytest.mark.django_db
@pytest.mark.db_backend
def test_a_conversation_export_imports_back_with_its_turns_and_images(answered, export):
    from datasets_app.services.exports import preference_import

    counts = preference_import(path=export, source_name="back", fmt="dpo")
    assert counts["created"] == 1
    back = Prompt.objects.get(source__name="back")
    assert back.turns == answered.turns and back.question == answered.question
    assert back.image_sha256 == answered.image_sha256
    assert [i.image_sha256 for i in back.more_images.all()] == [
        i.image_sha256 for i in answered.more_images.all()
    ]
    again = preference_import(path=export, source_name="back", fmt="dpo")
    assert again["created"] == 0 and again["duplicates"] == 1


@pytest.mark.django_db
@pytest.mark.db_backend
@pytest.mark.slow
def test_a_dpo_step_trains_from_the_conversation_export_unchanged(
    export, tmp_path, tiny_family_dir
):
    from tests.test_recipes import make_config
    from training.core.recipes import dpo

    config = make_config(
        tmp_path,
        tiny_family_dir,
        "dpo",
        export,
        max_steps=1,
        logging_steps=1,
        per_device_train_batch_size=1,
        precompute_ref_logps=True,
    )
    result = dpo.main(config)
    (logged,) = [h for h in result.trainer.state.log_history if "loss" in h]
    assert logged["loss"] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference
    assert (result.final_dir / "adapter_config.json").is_file()


# --- the annotation page --------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_annotation_page_shows_the_earlier_turns_with_their_images(
    tmp_path, live_server, page, annotator
):
    from annotation.services import campaigns

    path = _write(tmp_path / "data", [{"prompt": TURNS, "images": ["red.png", "blue.png"]}])
    prompts_import(path=path, source_name="convos", fmt="prompts")
    prompt = Prompt.objects.get()
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    for i, text in enumerate(_answers(2)):
        Completion.objects.create(prompt=prompt, checkpoint=checkpoint, text=text, sample_index=i)
    campaign = campaigns.campaign_create(name="convos", selection={"source_id": prompt.source_id})
    base = live_server.url
    _log_in(page, base, annotator.username)
    page.goto(f"{base}{reverse('annotation:next', args=[campaign.pk])}")
    turns = page.locator(".conversation .turn")
    assert turns.count() == 2
    assert turns.nth(0).get_attribute("data-role") == "user"
    assert "A red circle." in turns.nth(1).inner_text()
    assert page.locator(".turn-image").count() == 1
    question_image = page.locator(".prompt-image")
    assert question_image.count() == 1 and question_image.get_attribute("alt") == "image 2"
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.turn-image, .prompt-image'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    # Every earlier turn sits above the responses.
    assert page.evaluate(
        "document.querySelector('.conversation').getBoundingClientRect().bottom"
        " <= document.querySelector('.rate-card').getBoundingClientRect().top"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "annotate-conversation.png"), full_page=True)
    page.locator(".turn-image").click()
    assert page.evaluate(  # the overlay shows the image clicked, not the question's
        "document.querySelector('[data-zoomed]').src === document.querySelector('.turn-image').src"
    )


@pytest.mark.django_db
@pytest.mark.db_backend
def test_every_image_of_a_conversation_is_served_to_its_annotator_only(
    answered, client, make_user, annotator
):
    """The live server of the browser tests serves media itself; the media view with its
    checks is what production serves, so it is asked here."""
    from annotation.services import campaigns

    campaign = campaigns.campaign_create(name="c", selection={"source_id": answered.source_id})
    client.force_login(annotator)
    client.get(reverse("annotation:next", args=[campaign.pk]))  # assigns the item
    urls = [answered.image.url, answered.more_images.get().image.url]
    assert [client.get(url).status_code for url in urls] == [200, 200]
    client.force_login(make_user("otto", role="annotator"))
    assert [client.get(url).status_code for url in urls] == [404, 404]


@pytest.mark.django_db
@pytest.mark.db_backend
def test_the_demo_conversations_are_rated_by_the_oracle_on_their_final_turn(tmp_path):
    from annotation.services import judging
    from datasets_app.core.shapes import make_conversations

    path = make_conversations(tmp_path / "conv", n=6, seed=3)
    prompts_import(path=path, source_name="shapes-conversations", fmt="prompts")
    checkpoint = Checkpoint.objects.create(name="policy", model_path="x")
    prompts = list(Prompt.objects.all())
    assert len(prompts) == 6 and all(p.image_total == 2 and len(p.turns) == 2 for p in prompts)
    for prompt in prompts:
        for i, text in enumerate(("yes", "no")):
            Completion.objects.create(
                prompt=prompt, checkpoint=checkpoint, text=text, sample_index=i
            )
    config = judging.judge_config_from_spec("oracle")
    job = judging.judge_launch(
        judge_config=config, selection={"source_id": prompts[0].source_id}, enqueue=False
    )
    judging.judge_run(job_id=job.pk)
    for prompt in prompts:
        scores = {
            r.completion.text: r.correctness
            for r in Rating.objects.filter(completion__prompt=prompt).select_related("completion")
        }
        # The final turn asks about the second image: the oracle knows its scene.
        assert scores[prompt.reference_answer] == 4 and min(scores.values()) < 4, scores


def test_the_nemo_export_writes_the_earlier_turns_and_every_image(tmp_path):
    from datasets_app.core.curation.types import SftRow
    from datasets_app.core.export.nemo import write_nemo_jsonl
    from datasets_app.core.export.parquet import ExportItem

    images = {"a.png": _png("red"), "b.png": _png("blue")}
    item = ExportItem(
        SftRow(1, "Is the shape here the same?", "No.", label="helpfulness:4"),
        "a.png",
        more_image_keys=("b.png",),
        turns=tuple(TURNS[:2]),
    )
    stats = write_nemo_jsonl(tmp_path / "steerlm.jsonl", [item], images.__getitem__)
    record = json.loads((tmp_path / "steerlm.jsonl").read_text())
    assert stats.images == 2 and record["images"] == ["images/a.png", "images/b.png"]
    assert record["image"] == "images/a.png"
    assert [(t["from"], t["value"]) for t in record["conversations"]] == [
        ("User", "<image>\nWhat shape is in this picture?"),
        ("Assistant", "A red circle."),
        ("User", "Is the shape here the same?"),
        ("Assistant", "No."),
    ]
    assert record["conversations"][-1]["label"] == "helpfulness:4"
