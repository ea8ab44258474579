"""Settings read the environment and fail loudly; layers stay apart; compose is coherent."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from config import settings as project_settings
from tests.processes import settings_in_subprocess

ROOT = Path(__file__).resolve().parent.parent


def pure_core_modules() -> list[str]:
    """Every module of the pure core, from the one list that mypy reads too."""
    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    modules = []
    for entry in files:
        path = ROOT / entry
        sources = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for source in sources:
            parts = source.relative_to(ROOT).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


PURE_CORE = pure_core_modules()
# The recipes are the training code the runner subprocess runs: they import TRL and torch
# at the top. Everything else in the core loads heavy libraries inside the functions.
TRAINERS = {
    "training.core.recipes.common",
    "training.core.recipes.dpo",
    "training.core.recipes.kto",
    "training.core.recipes.mdpo",
    "training.core.recipes.reward",
    "training.core.recipes.grpo",
    "training.core.recipes.online_dpo",
    "training.core.recipes.sft",
    "training.core.recipes.ref_logps",
}


def test_env_helpers_fail_loudly(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        project_settings.env_bool("X_FLAG")
    monkeypatch.setenv("X_NUM", "12a")
    with pytest.raises(ImproperlyConfigured, match="X_NUM"):
        project_settings.env_int("X_NUM", 1)
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert project_settings.env_list("X_LIST", []) == ["a", "b", "c"]


def test_defaults_need_no_server_and_generate_a_secret(tmp_path):
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "REDIS_URL": "", "SECRET_KEY": ""}
    out = settings_in_subprocess(
        env, "s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, len(s.SECRET_KEY)"
    )
    assert out == "django.db.backends.sqlite3 filesystem:// 67"
    key_file = tmp_path / "secret_key"
    assert key_file.exists() and oct(key_file.stat().st_mode)[-3:] == "600"
    # The same key on the next start: sessions survive a restart.
    again = settings_in_subprocess(env, "s.SECRET_KEY")
    assert again == key_file.read_text()


def test_database_and_redis_urls_are_honoured(tmp_path):
    env = {
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://u:p@db.example:5433/studio",
        "REDIS_URL": "redis://cache:6379/2",
    }
    out = settings_in_subprocess(
        env, "s.DATABASES['default']['HOST'], s.DATABASES['default']['PORT'], s.CELERY_BROKER_URL"
    )
    assert out == "db.example 5433 redis://cache:6379/2"


def test_sqlite_runs_in_wal_mode(tmp_path):
    code = (
        "import django; django.setup(); from django.db import connection; "
        "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **os.environ,
            "VAR_DIR": str(tmp_path),
            "DATABASE_URL": "",
            "DJANGO_SETTINGS_MODULE": "config.settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "wal", result.stderr


def _loaded_after_importing(modules: list[str]) -> list[str]:
    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
        "print(','.join(m for m in ('django', 'torch', 'transformers', 'trl') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def test_the_pure_core_list_covers_every_core_folder():
    assert len(PURE_CORE) > 40 and set(PURE_CORE) >= TRAINERS
    for core in ROOT.glob("*/core"):
        assert any(m.startswith(f"{core.parent.name}.core") for m in PURE_CORE), core


def test_no_module_of_the_pure_core_imports_django():
    assert "django" not in _loaded_after_importing(PURE_CORE)


def test_the_pure_core_defers_heavy_imports_except_in_the_trainers():
    light = [m for m in PURE_CORE if m not in TRAINERS]
    assert _loaded_after_importing(light) == []


def test_compose_services_point_at_real_modules():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"web", "worker", "worker-gpu", "redis", "postgres"}
    web = " ".join(services["web"]["command"].split())
    assert "gunicorn config.wsgi:application" in web
    importlib.import_module("config.wsgi")
    consumed = []
    for name, queues in (("worker", "default,judge"), ("worker-gpu", "gpu")):
        command = services[name]["command"].split()
        assert command[:3] == ["celery", "-A", "config"]
        assert command[command.index("-Q") + 1] == queues
        consumed += queues.split(",")
    assert sorted(consumed) == sorted(importlib.import_module("config.celery").QUEUES)
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    env = services["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    for volume in ("media", "checkpoints", "datasets"):
        assert volume in compose["volumes"]
    # Every environment variable compose sets is one the settings module reads.
    settings_source = (ROOT / "config/settings.py").read_text()
    for key in env:
        assert f'"{key}"' in settings_source or key == "HF_HUB_OFFLINE", key
