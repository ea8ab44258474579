"""All settings, read from the environment only.

Every value has a default that works on a bare machine: SQLite in WAL mode under var/,
an embedded filesystem broker for Celery (no Redis server), media and checkpoints under
var/. Set DATABASE_URL, REDIS_URL, MEDIA_ROOT, CHECKPOINT_ROOT and friends for a real
deployment (see README.md and docker-compose.yml).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else default


VAR_DIR = env_path("VAR_DIR", BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once into var/ (never committed)."""
    from_env = os.environ.get("SECRET_KEY")
    if from_env:
        return from_env
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "workers",
    "datasets_app",
    "annotation",
    "training",
    "api",
    # django-ninja: listed so that /api/docs serves Swagger UI from its static files, not a CDN.
    "ninja",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page requires login; public views opt out with @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "config.middleware.HideAdminFromNonStaff",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.roles",
            ],
        },
    },
]


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        db: dict = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
        }
    else:
        db = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the web server read while a worker writes; IMMEDIATE transactions take
        # the write lock up front so that two writers queue instead of failing mid-way.
        db.setdefault("OPTIONS", {}).update(
            {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            }
        )
        # A file, not :memory:, so that a worker process started by a test sees the data.
        db["TEST"] = {"NAME": env_str("SQLITE_TEST_NAME", str(VAR_DIR / "test-db.sqlite3"))}
    return db


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from the app folders too, so that a checkout works before collectstatic.
WHITENOISE_USE_FINDERS = True

# Images and exports go through the storage API only (never raw paths), so that an
# S3-compatible store configured here serves several machines.
MEDIA_ROOT = env_path("MEDIA_ROOT", VAR_DIR / "media")
MEDIA_URL = "media/"
# Where the access-checked media view answers (config/urls.py).
MEDIA_URL_PATH = "/media/"
_storage_backend = env_str("STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
_S3_BACKENDS = ("storages.backends.s3.S3Storage", "s3")
if _storage_backend in _S3_BACKENDS:
    # Links go through the media view, which checks access, then signs (config/storage.py).
    _storage_backend = "config.storage.AccessCheckedS3Storage"
STORAGES = {
    "default": {"BACKEND": _storage_backend},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
if _storage_backend == "config.storage.AccessCheckedS3Storage":
    STORAGES["default"]["OPTIONS"] = {
        "bucket_name": env_str("S3_BUCKET"),
        "endpoint_url": env_str("S3_ENDPOINT_URL") or None,
        "querystring_auth": True,
        "signature_version": "s3v4",
        "default_acl": None,
        "file_overwrite": False,
    }
# Seconds a signed object-storage URL stays valid after the media view's access check.
MEDIA_SIGNED_URL_SECONDS = env_int("MEDIA_SIGNED_URL_SECONDS", 300)
# Object storage: a file larger than the threshold goes up as a multipart upload in parts
# of the chunk size (config/storage.py). S3 refuses parts under 5 MiB but the last.
S3_MULTIPART_THRESHOLD = env_int("S3_MULTIPART_THRESHOLD", 8 * 1024 * 1024)
S3_MULTIPART_CHUNKSIZE = env_int("S3_MULTIPART_CHUNKSIZE", 8 * 1024 * 1024)

# Model folders; a shared volume when workers run on several machines.
CHECKPOINT_ROOT = env_path("CHECKPOINT_ROOT", VAR_DIR / "checkpoints")
# One training run over several machines (`accelerate launch`, DeepSpeed): every machine
# sets the same count, address and port, and its own rank. The gpu worker of rank 0 takes
# the job; the others run `manage.py train_follow` (README, "Training on several machines").
TRAIN_NUM_MACHINES = env_int("TRAIN_NUM_MACHINES", 1)
TRAIN_MACHINE_RANK = env_int("TRAIN_MACHINE_RANK", 0)
TRAIN_MAIN_ADDRESS = env_str("TRAIN_MAIN_ADDRESS")
TRAIN_MAIN_PORT = env_int("TRAIN_MAIN_PORT", 29500)
# Where the instruction-tuned start is cached, by checksum (unset: CHECKPOINT_ROOT/start).
START_CACHE_DIR = os.environ.get("START_CACHE_DIR") or None

# Imports: limits that keep a hostile or broken file from hurting the server.
IMPORT_MAX_IMAGE_BYTES = env_int("IMPORT_MAX_IMAGE_BYTES", 20 * 1024 * 1024)
IMPORT_MAX_IMAGE_PIXELS = env_int("IMPORT_MAX_IMAGE_PIXELS", 40_000_000)
# Per prompt (several images, conversations): more is refused with a row-level error.
IMPORT_MAX_PROMPT_IMAGES = env_int("IMPORT_MAX_PROMPT_IMAGES", 16)
IMPORT_MAX_PROMPT_PIXELS = env_int("IMPORT_MAX_PROMPT_PIXELS", 80_000_000)
IMPORT_MAX_UPLOAD_BYTES = env_int("IMPORT_MAX_UPLOAD_BYTES", 2 * 1024**3)

# Judge API keys: read here, never stored in rows, rendered or logged.
GEMINI_API_KEY = env_str("GEMINI_API_KEY") or env_str("GOOGLE_API_KEY")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
GEMINI_BASE_URL = env_str("GEMINI_BASE_URL")

# Celery. Redis when REDIS_URL is set; otherwise kombu's filesystem transport under var/,
# which needs no server process so that the first run works on a bare machine.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # A task whose worker died (acks_late) is delivered again after this many seconds. Long
    # enough for a whole training run, since a redelivered training job resumes; sharded
    # jobs do not wait for it: the reaper sends a dead worker's chunk again (JOB_CHUNK_*).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 6 * 3600),
        # kombu scans for such tasks every interval x throttle seconds.
        "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL_S", 10),
        "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 10),
    }
else:
    _broker_dir = VAR_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcasts (inspect, ping) would otherwise write to ./control in the cwd.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = False
# Job state lives in the project's own tables (workers.Job), not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Generation batches are sized so that rows x (prompt + new tokens) stays under this budget.
GENERATION_TOKEN_BUDGET_CPU = env_int("GENERATION_TOKEN_BUDGET_CPU", 16_384)
GENERATION_TOKEN_BUDGET_GPU = env_int("GENERATION_TOKEN_BUDGET_GPU", 131_072)
# Annotation: submissions one person may make in a minute (a runaway script, not a human).
ANNOTATION_MAX_SUBMITS_PER_MINUTE = env_int("ANNOTATION_MAX_SUBMITS_PER_MINUTE", 60)
# Seconds after which a running job with no heartbeat is considered dead.
JOB_STALE_AFTER_S = env_int("JOB_STALE_AFTER_S", 300)
# Sharded jobs (generation, judging): prompts per chunk, one Celery task each.
JOB_CHUNK_SIZE = env_int("JOB_CHUNK_SIZE", 64)
# A running chunk with no heartbeat for this long belonged to a worker that died: another
# worker may take it over. A worker writes its chunk's heartbeat every quarter of this.
JOB_CHUNK_STALE_S = env_int("JOB_CHUNK_STALE_S", 120)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Hub downloads never happen implicitly: a hub id fails at once instead of retrying for a
# minute on a machine without network. Set HF_HUB_OFFLINE=0 where the hub is reachable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
