"""The demo set-up that scripts/run performs: idempotent, and its model generates."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from datasets_app.models import Prompt, Source
from training.models import Checkpoint
from training.services.checkpoints import checkpoint_location

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_setup_demo_builds_everything_once_and_the_model_answers(settings, monkeypatch, capsys):
    settings.VAR_DIR = settings.MEDIA_ROOT.parent / "var"
    settings.VAR_DIR.mkdir()
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    call_command("setup_demo", n=10, seed=1)
    first = capsys.readouterr().out
    password = first.split("demo login: admin / ", 1)[1].split()[0]
    user = get_user_model().objects.get(username="admin")
    assert user.is_staff and user.check_password(password)
    assert user.groups.filter(name="staff").exists()
    assert (settings.VAR_DIR / "demo_password").read_text() == password

    checkpoint = Checkpoint.objects.get()
    folder = checkpoint_location(checkpoint.model_path)
    assert folder == str(settings.CHECKPOINT_ROOT / "tiny-llava")
    assert set(Source.objects.values_list("name", flat=True)) == {"shapes-scienceqa", "shapes-pope"}
    n_prompts = Prompt.objects.count()
    assert Prompt.objects.filter(source__name="shapes-scienceqa").count() == 10

    call_command("setup_demo", n=10, seed=1)
    again = capsys.readouterr().out
    assert f"demo login: admin / {password}" in again  # same password, printed again
    assert Prompt.objects.count() == n_prompts and Checkpoint.objects.count() == 1

    from PIL import Image

    from training.core.generation import generate_text
    from training.core.modeling import load_policy

    policy = load_policy(folder)
    prompt = Prompt.objects.filter(source__name="shapes-scienceqa").first()
    with prompt.image.open("rb") as handle:
        image = Image.open(handle).convert("RGB")
    (text,) = generate_text(policy, [image], [prompt.question], max_new_tokens=8)
    assert isinstance(text, str) and text.strip()
