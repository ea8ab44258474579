"""Shared fixtures: isolated media/checkpoint folders, personas, image builders."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.judge_fixtures import (  # noqa: F401  (shared fixtures)
    fake_gemini,
    fake_openai,
    numbered_completions,
)
from tests.s3_fixtures import s3_storage  # noqa: F401  (shared fixture)


def png_bytes(size: tuple[int, int] = (16, 16), colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _isolated_storage(request, tmp_path):
    """Each test writes media and checkpoints under its own tmp folder."""
    if "settings" not in request.fixturenames and not _django_test(request):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CHECKPOINT_ROOT = tmp_path / "checkpoints"
    yield


@pytest.fixture(scope="session")
def start_cache(tmp_path_factory):
    """One instruction-tuned start for the session (START_CACHE_DIR): it takes minutes to
    build, and its checksum keys it, so the demo and loop tests share it. TEST_START_CACHE_DIR
    points at a folder kept between sessions (a developer's; CI starts from nothing)."""
    kept = os.environ.get("TEST_START_CACHE_DIR")
    return Path(kept) if kept else tmp_path_factory.mktemp("start-cache")


def _django_test(request) -> bool:
    return any(m.name == "django_db" for m in request.node.iter_markers()) or any(
        name in request.fixturenames for name in ("db", "transactional_db", "client", "live_server")
    )


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    def make(username: str, *, role: str | None = None, **extra):
        user = get_user_model().objects.create_user(
            username=username, password="pw-" + username, **extra
        )
        if role:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def staff_user(make_user):
    return make_user("stella", role="staff")


@pytest.fixture
def curator(make_user):
    return make_user("curt", role="curator")


@pytest.fixture
def annotator(make_user):
    return make_user("anna", role="annotator")


@pytest.fixture
def outsider(make_user):
    return make_user("olly")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny LLaVA, built once per test session (about 5 s)."""
    from training.core.tiny_models import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny") / "llava", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    """The tiny Qwen2.5-VL (dynamic resolution, the real chat template), built once (~4 s)."""
    from training.core.tiny_models import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny") / "qwen2_5_vl", seed=0)


@pytest.fixture(scope="session", params=["llava", "qwen2_5_vl"])
def tiny_family_dir(request):
    """Each tiny family in turn: tests that must hold for every family take this."""
    name = "tiny_dir" if request.param == "llava" else "tiny_qwen_dir"
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def tiny_policy(tiny_dir):
    from training.core.modeling import load_policy

    return load_policy(str(tiny_dir), device="cpu")


@pytest.fixture
def shapes_source(db, tmp_path):
    """Six shapes images imported as a ScienceQA-format source named "sqa"."""
    from datasets_app.core.shapes import make_shapes
    from datasets_app.services.imports import prompts_import

    make_shapes(tmp_path / "shapes", n=6, seed=4)
    return prompts_import(
        path=tmp_path / "shapes" / "scienceqa.parquet", source_name="sqa", fmt="scienceqa"
    ).source


@pytest.fixture
def redis_url(tmp_path):
    """A throw-away redis-server on 127.0.0.1 for the broker tests."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run scripts/system-deps"
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", tmp_path],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(10)
