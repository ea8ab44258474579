"""The demo set-up that scripts/run performs: idempotent, and its model generates."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from datasets_app.models import Prompt, Source
from training.models import Checkpoint
from training.services.checkpoints import checkpoint_location

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_setup_demo_builds_everything_once_and_the_start_answers(
    settings, monkeypatch, capsys, start_cache
):
    from training.services.start import START_NAME
    from workers.demo import DEMO_CHECKPOINT

    settings.VAR_DIR = settings.MEDIA_ROOT.parent / "var"
    settings.VAR_DIR.mkdir()
    settings.START_CACHE_DIR = str(start_cache)
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    call_command("setup_demo", n=10, seed=1)
    first = capsys.readouterr().out
    password = first.split("demo login: admin / ", 1)[1].split()[0]
    user = get_user_model().objects.get(username="admin")
    assert user.is_staff and user.check_password(password)
    assert user.groups.filter(name="staff").exists()
    assert (settings.VAR_DIR / "demo_password").read_text() == password

    random_weights = Checkpoint.objects.get(name=DEMO_CHECKPOINT)  # still listed
    assert checkpoint_location(random_weights.model_path) == str(
        settings.CHECKPOINT_ROOT / "tiny-llava"
    )
    start = Checkpoint.objects.get(name=START_NAME)  # the demo's default
    demo_sources = {"shapes-scienceqa", "shapes-pope", "shapes-pool"}
    assert demo_sources <= set(Source.objects.values_list("name", flat=True))
    assert Prompt.objects.filter(source__name="shapes-scienceqa").count() == 10
    pool = Prompt.objects.filter(source__name="shapes-pool")
    assert pool.count() == 100 and set(pool.values_list("split", flat=True)) == {"train"}
    conversations = Prompt.objects.filter(source__name="shapes-conversations")
    assert conversations.count() == 40
    first_conversation = conversations.first()
    assert len(first_conversation.turns) == 2 and first_conversation.image_total == 2
    assert first_conversation.reference_answer in ("yes", "no")
    n_prompts, n_checkpoints = Prompt.objects.count(), Checkpoint.objects.count()

    call_command("setup_demo", n=10, seed=1)
    again = capsys.readouterr().out
    assert f"demo login: admin / {password}" in again  # same password, printed again
    assert "(cached)" in again
    assert Prompt.objects.count() == n_prompts and Checkpoint.objects.count() == n_checkpoints

    from PIL import Image

    from training.core.generation import generate_text
    from training.core.modeling import load_policy

    policy = load_policy(checkpoint_location(start.model_path))
    prompt = Prompt.objects.filter(source__name="shapes-pope").first()
    with prompt.image.open("rb") as handle:
        image = Image.open(handle).convert("RGB")
    question = prompt.question + "\nAnswer the question using a single word or phrase."
    (text,) = generate_text(policy, [image], [question], max_new_tokens=4)
    assert text.strip().lower() in ("yes", "no"), text
