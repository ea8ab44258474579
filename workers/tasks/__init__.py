"""Celery tasks, one module per pipeline step; the module name decides the queue
(config.celery.TASK_ROUTES). Tasks take ids, call one service, and return nothing."""

from workers.tasks import (
    evaluation,
    exports,
    generation,
    imports,
    judging,
    maintenance,
    selftest,
    training,
)

__all__ = [
    "evaluation",
    "exports",
    "generation",
    "imports",
    "judging",
    "maintenance",
    "selftest",
    "training",
]
