"""One training run over several machines: how the machines find the same job.

The gpu worker of machine rank 0 takes the training job from the queue as on one machine
(training/services/trainings.py): it exports the data into the run folder on the shared
CHECKPOINT_ROOT, writes job-config.json, records the launch in the job's metrics
(`launch`: machines, address, port, attempt) and starts `accelerate launch --machine_rank 0`.
Every other machine runs `manage.py train_follow`, which waits for such a record and starts
the same command with its own rank, from the same files, until the job stops running.
Rank 0 alone talks to the job row (progress, metrics, checkpoint); the processes meet at
TRAIN_MAIN_ADDRESS:TRAIN_MAIN_PORT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from training.core import protocol
from training.core.runs import Machines, launch_command
from training.models import TrainingJob
from workers.core.supervisor import supervise
from workers.models import Job

# Where a following machine's `accelerate launch` writes its output, in the run folder.
FOLLOWER_LOG = "runner.machine{rank}.log"


def worker_machines() -> Machines:
    """This machine's TRAIN_* settings; ValueError when they cannot work."""
    machines = Machines(
        count=settings.TRAIN_NUM_MACHINES,
        rank=settings.TRAIN_MACHINE_RANK,
        main_address=settings.TRAIN_MAIN_ADDRESS,
        main_port=settings.TRAIN_MAIN_PORT,
    )
    machines.check()
    return machines


def launch_record(machines: Machines, *, attempt: int) -> dict[str, Any]:
    """What rank 0 writes into the job's metrics for the other machines to join."""
    return {
        "machines": machines.count,
        "main_address": machines.main_address,
        "main_port": machines.main_port,
        "attempt": attempt,
    }


def _joinable(job: Job, rank: int) -> bool:
    launch = job.metrics.get("launch") or {}
    return (
        launch.get("machines", 1) > rank
        # A record from an earlier attempt: rank 0 has not started this one yet.
        and launch.get("attempt") == job.attempts
    )


def training_to_join(*, rank: int, joined: set[tuple[int, int]]) -> TrainingJob | None:
    """The oldest running multi-machine training job whose current attempt this machine has
    not joined yet (running jobs are few: filtered here rather than by JSON lookups)."""
    running = Job.objects.filter(kind=Job.Kind.TRAINING, status=Job.Status.RUNNING)
    for job in running.order_by("started_at", "pk"):
        if (job.pk, job.attempts) not in joined and _joinable(job, rank):
            return TrainingJob.objects.filter(job=job).select_related("job").first()
    return None


def training_join(*, training: TrainingJob, rank: int, poll_s: float = 2.0) -> int:
    """Run this machine's share of the job's current attempt until it ends (or the job
    stops running: cancelled, failed, or a newer attempt); the launcher's exit code."""
    job = training.job
    launch = job.metrics["launch"]
    machines = Machines(
        count=launch["machines"],
        rank=rank,
        main_address=launch["main_address"],
        main_port=launch["main_port"],
    )
    out = Path(training.output_dir)
    command = launch_command(
        out / protocol.JOB_CONFIG_FILE,
        gpus=training.gpus,
        zero=training.zero or None,
        machines=machines,
    )
    attempt = job.attempts

    def should_stop() -> bool:
        return not Job.objects.filter(
            pk=job.pk, status=Job.Status.RUNNING, attempts=attempt, cancel_requested=False
        ).exists()

    # Rank 0's worker reads the metrics; this machine's first process writes its own file
    # (protocol.metrics_file_name), tailed here and dropped.
    first_rank = {protocol.RANK_ENV: str(rank * training.gpus)}
    outcome = supervise(
        command,
        metrics_path=out / protocol.metrics_file_name(first_rank),
        log_path=out / FOLLOWER_LOG.format(rank=rank),
        on_events=lambda events: None,
        should_stop=should_stop,
        poll_s=poll_s,
    )
    return outcome.returncode


def training_follow(
    *,
    rank: int,
    poll_s: float = 5.0,
    max_jobs: int | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Join every multi-machine training job as machine `rank`, one after another (or the
    first `max_jobs`); returns how many were joined."""
    if rank < 1:
        raise ValueError(
            "machine rank 0 is the gpu worker that takes the job from the queue; a machine "
            "that follows sets TRAIN_MACHINE_RANK to 1 or more"
        )
    joined: set[tuple[int, int]] = set()
    while max_jobs is None or len(joined) < max_jobs:
        training = training_to_join(rank=rank, joined=joined)
        if training is None:
            time.sleep(poll_s)
            continue
        joined.add((training.job.pk, training.job.attempts))
        say(f"joining {training.name} (job {training.job.pk}) as machine {rank}")
        code = training_join(training=training, rank=rank, poll_s=min(poll_s, 2.0))
        say(f"{training.name}: this machine's processes ended with exit code {code}")
    return len(joined)
