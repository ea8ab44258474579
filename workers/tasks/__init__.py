"""Celery tasks, one module per pipeline step. Tasks take ids, call one service, and return
nothing. Which task runs a job, and on which queue, is decided in config.celery.JOB_TASKS;
services send tasks by name (workers.jobs.job_enqueue) and never import these modules."""

from workers.tasks import (
    chunks,
    evaluation,
    exports,
    generation,
    imports,
    judging,
    lab,
    maintenance,
    selftest,
    training,
)

__all__ = [
    "chunks",
    "evaluation",
    "exports",
    "generation",
    "imports",
    "judging",
    "lab",
    "maintenance",
    "selftest",
    "training",
]
