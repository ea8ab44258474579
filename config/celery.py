"""The Celery app: three queues, routing by task, broker from settings.

Connecting to the broker happens lazily, at the first send or in the worker, never at
import time.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUEUES = ("default", "judge", "gpu")

# Task name prefix -> queue. The GPU queue runs one process per GPU; judge is I/O-bound.
TASK_ROUTES = {
    "workers.tasks.generation.*": {"queue": "gpu"},
    "workers.tasks.training.*": {"queue": "gpu"},
    "workers.tasks.evaluation.*": {"queue": "gpu"},
    "workers.tasks.judging.*": {"queue": "judge"},
    "workers.tasks.*": {"queue": "default"},
}

app = Celery("preference_studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in QUEUES]
app.conf.task_routes = TASK_ROUTES
app.conf.beat_schedule = {
    # A job whose worker died stops sending heartbeats; mark it failed so pages say so.
    "reap-stale-jobs": {"task": "workers.tasks.maintenance.reap_stale_jobs", "schedule": 60.0},
    # Abandoned annotation items go back to the queue even when nobody asks for the next.
    "expire-assignments": {
        "task": "workers.tasks.maintenance.expire_assignments",
        "schedule": 60.0,
    },
}
app.autodiscover_tasks(["workers"])
