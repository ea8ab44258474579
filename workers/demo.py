"""The demo set-up behind `manage.py setup_demo`: users, models, shapes data, imports.

Every step is idempotent, so the run script can call it on each start.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from datasets_app.services.imports import prompts_import
from training.services.checkpoints import checkpoint_register_base

TINY_MODEL_DIR = "tiny-llava"
DEMO_CHECKPOINT = "tiny-llava (random weights)"
CONVERSATIONS = "shapes-conversations"


@dataclass
class DemoOutcome:
    username: str
    password: str | None  # None when the user existed and kept its password
    checkpoint: str
    prompts_created: int


DEMO_TEAM = (("curator", "curator"), ("annotator", "annotator"))


def demo_team_ensure(*, password: str) -> list[str]:
    """A curator and an annotator with the demo password, so every role can be tried."""
    user_model = get_user_model()
    names = []
    for username, group in DEMO_TEAM:
        user, created = user_model.objects.get_or_create(username=username)
        if created:
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get(name=group))
        names.append(username)
    return names


def demo_user_ensure(*, username: str, password: str | None) -> str | None:
    """Create the demo staff user once and return its password.

    A generated password is kept in var/demo_password (mode 600) so that later runs can
    print it again; None when the user exists with a password set by someone else.
    """
    saved = Path(settings.VAR_DIR) / "demo_password"
    user_model = get_user_model()
    with transaction.atomic():
        user = user_model.objects.filter(username=username).first()
        if user is not None and not password:
            known = saved.read_text().strip() if saved.exists() else ""
            return known if known and user.check_password(known) else None
        if user is None:
            user = user_model(username=username, is_staff=True, is_superuser=True)
        if not password:
            password = secrets.token_urlsafe(12)
            saved.write_text(password)
            saved.chmod(0o600)
        user.set_password(password)
        user.save()
        user.groups.add(Group.objects.get(name="staff"))
    return password


def demo_setup(
    *,
    username: str,
    password: str | None,
    n_images: int = 120,
    seed: int = 0,
    with_start: bool = True,
    log: Callable[[str], None] = print,
) -> DemoOutcome:
    """Users, the random tiny model, the instruction-tuned start (built once, cached) as the
    demo's default checkpoint, and shapes data of the world the start can learn: ScienceQA
    and POPE files (imported, and the held-out files of the walk's evaluations) and a pool of
    prompts on other images to generate, judge and curate on."""
    from datasets_app.core.shapes import make_conversations, make_loop_data
    from training.core.tiny_models import build_tiny_llava
    from training.services.start import start_checkpoint

    password = demo_user_ensure(username=username, password=password)
    if password:
        demo_team_ensure(password=password)

    model_dir = Path(settings.CHECKPOINT_ROOT) / TINY_MODEL_DIR
    if not (model_dir / "config.json").exists():
        log(f"building the tiny LLaVA into {model_dir}")
        build_tiny_llava(model_dir, seed=seed)
    checkpoint = checkpoint_register_base(
        name=DEMO_CHECKPOINT,
        model_path=TINY_MODEL_DIR,
        notes="Built offline by build_tiny_llava: random weights, for walking the loop.",
    )

    if with_start:
        built = start_checkpoint(log=log)
        log(built.detail)
        checkpoint = built.checkpoint

    data_dir = Path(settings.VAR_DIR) / "demo" / f"shapes-n{n_images}-s{seed}"
    if not (data_dir / "pool.parquet").exists():
        log(f"drawing {n_images} shapes images and a pool of {10 * n_images} into {data_dir}")
        # a pool 10 times the images: enough pairs for DPO to show a gain in the README's walk
        make_loop_data(data_dir, n=n_images, pool=10 * n_images, seed=seed)
    created = 0
    for fmt, name in (("scienceqa", "scienceqa"), ("pope", "pope"), ("prompts", "pool")):
        outcome = prompts_import(
            path=data_dir / f"{name}.parquet", source_name=f"shapes-{name}", fmt=fmt
        )
        created += outcome.created
        log(f"{outcome.source.name}: {outcome.created} new prompts, {outcome.duplicates} present")
    # Conversations of three turns with two images: what the annotation page, the judges
    # and the exports do with earlier turns, on the same world.
    conversations = data_dir / "conversations" / "conversations.jsonl"
    if not conversations.exists():
        make_conversations(conversations.parent, n=40, seed=seed)
    outcome = prompts_import(path=conversations, source_name=CONVERSATIONS, fmt="prompts")
    created += outcome.created
    log(f"{outcome.source.name}: {outcome.created} new prompts, {outcome.duplicates} present")
    return DemoOutcome(username, password, checkpoint.name, created)
