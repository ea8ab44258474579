"""The Celery app: three queues, routing by task, broker from settings.

Connecting to the broker happens lazily, at the first send or in the worker, never at
import time.

`JOB_TASKS` is the one place that says which task runs a kind of job and on which queue:
`workers.jobs.job_create` records that queue on the Job row, `workers.jobs.job_enqueue`
sends the task by name (so no service imports a task module), and Celery's routes below
are built from the same rows.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUEUES = ("default", "judge", "gpu")

# Job kind (workers.models.Job.Kind) -> (task name, queue). The GPU queue runs one process
# per GPU; judge is I/O-bound. A self-test job goes to the queue it was asked to test, the
# one kind whose queue is chosen per job; "default" is only where it goes when not told.
JOB_TASKS: dict[str, tuple[str, str]] = {
    "import": ("workers.tasks.imports.run_import", "default"),
    "export": ("workers.tasks.exports.run_export", "default"),
    "generation": ("workers.tasks.generation.run_generation", "gpu"),
    "judging": ("workers.tasks.judging.run_judging", "judge"),
    "training": ("workers.tasks.training.run_training", "gpu"),
    "evaluation": ("workers.tasks.evaluation.run_evaluation", "gpu"),
    "lab": ("workers.tasks.lab.run_lab", "gpu"),
    "selftest": ("workers.tasks.selftest.run_selftest", "default"),
}
CHOSEN_QUEUE_KINDS = frozenset({"selftest"})

# Task name -> queue: the job tasks from the table, then everything else (maintenance) on
# default.
TASK_ROUTES = {
    **{task: {"queue": queue} for task, queue in JOB_TASKS.values()},
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
