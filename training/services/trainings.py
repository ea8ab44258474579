"""Services for training jobs: launch (everything checked before GPU time), run (export the
dataset version, supervise `python -m training.run`, copy its metrics into the Job), and
register the resulting checkpoint.

Layout of a run under CHECKPOINT_ROOT/runs/<name>/:
    data/            the dataset version's export (train.parquet, eval.parquet, README.md)
    job-config.json  the TrainConfig the runner reads (resume=true on a resumed attempt)
    metrics.jsonl    events from the runner; runner.log its stdout and stderr
                     (these names and the events are the runner protocol: training/core/protocol.py)
    checkpoint-N/    Trainer checkpoints (resume picks the last complete one)
    final/           the adapter (or full model), processor and config; final/merged if merged
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.names import safe_name
from datasets_app.models import DatasetVersion
from datasets_app.services.exports import dataset_version_export
from training.core import protocol
from training.core.protocol import EXIT_BAD_CONFIG, TrainingProgress
from training.core.recipes.config import (
    PRESETS,
    RECIPES,
    ConfigError,
    TrainConfig,
)
from training.core.runs import ZERO_STAGES, launch_command
from training.models import Checkpoint, TrainingJob
from training.services.checkpoints import (
    checkpoint_location,
    checkpoint_stored_path,
    reward_model_folder,
)
from training.services.evaluations import evaluation_launch, evaluation_specs_check
from training.services.machines import launch_record, worker_machines
from workers.core.supervisor import MetricsTail, supervise
from workers.jobs import (
    JobCancelled,
    JobFailed,
    job_create,
    job_enqueue,
    job_log_append,
    job_running,
)
from workers.models import Job

# Set by the site from the launch form: a user's overrides may not change them.
MANAGED_KEYS = frozenset(
    {
        "recipe",
        "model_path",
        "base_adapter",
        "train_file",
        "eval_file",
        "output_dir",
        "dataset_kind",
        "resume",
        "ref_logps_cache_dir",
    }
)
RUNS_DIR = "runs"
HEARTBEAT_WRITE_S = 10.0


def code_version() -> str:
    """The git commit the site runs (with -dirty for local changes), or "unknown"."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=protocol.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _run_name(recipe: str, version: DatasetVersion) -> str:
    """recipe-dataset-vN-time-xxxx: the random tail keeps two launches in one second apart,
    so that a default name never collides (a collision would hide the real form error)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{recipe}-{version.name}-v{version.version}")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return f"{slug.strip('-')[:100]}-{stamp}-{secrets.token_hex(2)}"


def _base_paths(base: Checkpoint) -> dict[str, str | None]:
    """model_path (a full checkpoint) and base_adapter for training on top of `base`."""
    model_path = checkpoint_location(base.model_path)
    adapter = checkpoint_location(base.adapter_path) if base.adapter_path else None
    return {"model_path": model_path, "base_adapter": adapter}


def training_config(
    *,
    recipe: str,
    dataset_version: DatasetVersion,
    base_checkpoint: Checkpoint,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    output_dir: str,
) -> TrainConfig:
    """The job's TrainConfig, validated except for the data files (exported at run time)."""
    overrides = dict(overrides or {})
    managed = sorted(MANAGED_KEYS & set(overrides))
    if managed:
        raise ValueError(f"these keys are set by the site, not by overrides: {', '.join(managed)}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    if preset and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if dataset_version.status != DatasetVersion.Status.READY:
        raise ValueError(f"dataset version {dataset_version} is {dataset_version.status}")
    expected = RECIPES[recipe]
    if dataset_version.kind != expected:
        raise ValueError(
            f"recipe {recipe!r} trains on a {expected!r} dataset version; "
            f"{dataset_version} is {dataset_version.kind!r}"
        )
    if not dataset_version.rows.filter(split="train").exists():
        raise ValueError(f"dataset version {dataset_version} has no training rows")
    paths = _base_paths(base_checkpoint)
    if str(overrides.get("online_ranker", "")).startswith("reward:"):
        overrides["online_ranker"] = reward_ranker(overrides["online_ranker"])
    if str(overrides.get("online_ranker", "")).startswith("judge:"):
        judge_ranker_check(overrides["online_ranker"])
    data: dict[str, Any] = {
        **({"preset": preset} if preset else {}),
        **overrides,
        "recipe": recipe,
        **paths,
        "train_file": str(Path(output_dir) / "data" / "train.parquet"),
        "output_dir": output_dir,
        "dataset_kind": dataset_version.kind,
    }
    if paths["base_adapter"] and data.get("finetune", "lora") == "lora":
        # The new adapter only applies on top of the merge (see TrainConfig.base_adapter).
        data["merge_adapter"] = True
    try:
        config = TrainConfig.from_dict(data).resolved()
        config.validate(data_files=False)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return config


def judge_ranker_check(ranker: str) -> None:
    """A judge ranker is checked as the Judge page checks a judge (its key, its model)."""
    from annotation.services.judging import judge_config_check

    provider, _, model = ranker.removeprefix("judge:").partition(":")
    if provider in ("local", "openai", "gemini"):
        try:
            judge_config_check(provider=provider, model=model, load_checkpoint=False)
        except ValueError as exc:
            raise ValueError(f"online_ranker {ranker!r}: {exc}") from None


def reward_ranker(ranker: str) -> str:
    """ "reward:NAME" (a registered reward model checkpoint) as the runner reads it,
    "reward:PATH" (the folder with its head: the adapter, or the full model)."""
    try:
        return f"reward:{reward_model_folder(ranker.removeprefix('reward:'))}"
    except ValueError as exc:
        raise ValueError(f"online_ranker {ranker!r}: {exc}") from None


def training_launch(
    *,
    recipe: str,
    dataset_version: DatasetVersion,
    base_checkpoint: Checkpoint,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    gpus: int = 1,
    zero: str | None = None,
    name: str = "",
    evaluations: list[dict[str, Any]] | None = None,
    user: Any = None,
    enqueue: bool = True,
) -> TrainingJob:
    """Check everything that can be checked without a GPU, then queue the job on `gpu`."""
    if zero and zero not in ZERO_STAGES:
        raise ValueError(f"unknown ZeRO stage {zero!r} (known: {', '.join(ZERO_STAGES)})")
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}")
    name = (
        safe_name(name, "run name") if (name or "").strip() else _run_name(recipe, dataset_version)
    )
    if (
        TrainingJob.objects.filter(name=name).exists()
        or Checkpoint.objects.filter(name=name).exists()
    ):
        raise ValueError(f"the name {name!r} is taken: choose another")
    output_dir = str(Path(settings.CHECKPOINT_ROOT) / RUNS_DIR / name)
    if Path(output_dir).exists():
        raise ValueError(f"{output_dir} exists already: choose another name")
    config = training_config(
        recipe=recipe,
        dataset_version=dataset_version,
        base_checkpoint=base_checkpoint,
        preset=preset,
        overrides=overrides,
        output_dir=output_dir,
    )
    if evaluations:
        evaluations = evaluation_specs_check(evaluations)
    with transaction.atomic():
        job = job_create(
            kind=Job.Kind.TRAINING,
            title=f"{recipe} on {dataset_version} from {base_checkpoint.name}",
            created_by=user,
        )
        training = TrainingJob.objects.create(
            name=name,
            recipe=recipe,
            base_checkpoint=base_checkpoint,
            dataset_version=dataset_version,
            config=config.to_dict(),
            gpus=gpus,
            zero=zero or "",
            evaluations=evaluations or [],
            dataset_checksum=dataset_version.checksum,
            job=job,
            output_dir=output_dir,
            code_version=code_version(),
            created_by=user,
        )
        if enqueue:
            job_enqueue(job)
    return training


# --- running -------------------------------------------------------------------------------


def _export_data(training: TrainingJob) -> dict[str, str | None]:
    """Export the dataset version into OUTPUT_DIR/data once (a resumed attempt reuses it)."""
    data = Path(training.output_dir) / "data"
    if not (data / "README.md").is_file():
        data.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=data.parent, prefix=".data-") as tmp:
            dataset_version_export(version=training.dataset_version, out_dir=tmp)
            if data.exists():  # a half-written folder from an attempt killed mid-export
                shutil.rmtree(data)
            Path(tmp).rename(data)
    eval_file = data / "eval.parquet"
    return {
        "train_file": str(data / "train.parquet"),
        "eval_file": str(eval_file) if eval_file.is_file() else None,
    }


def _run_config(training: TrainingJob) -> TrainConfig:
    config = TrainConfig.from_dict(training.config)
    files = _export_data(training)
    values = {**config.to_dict(), **files}
    if values["eval_file"] and values["eval_fraction"]:
        values["eval_fraction"] = 0.0  # the version's own eval split wins
    # A later attempt continues the run; `check_output_dir` refuses a fresh start on top of it.
    values["resume"] = (Path(training.output_dir) / protocol.CONFIG_FILE).is_file()
    return TrainConfig.from_dict(values)


class _Recorder:
    """Copies runner events into the Job row: metrics, progress, heartbeat, log lines."""

    def __init__(self, job: Job, metrics_path: Path) -> None:
        self.job = job
        if metrics_path.is_file():
            # A later attempt: fold the whole log again. An earlier attempt's runner may have
            # written events after its worker died, which no one read; the fold keeps what
            # a resume trains again out (train_begin drops the points after its step).
            self.progress = TrainingProgress()
            protocol.fold(MetricsTail(metrics_path).read(), self.progress)
        else:
            self.progress = TrainingProgress.from_dict(job.metrics.get("training"))
        self._last_heartbeat = 0.0

    def events(self, events: list[dict[str, Any]]) -> None:
        protocol.fold(events, self.progress)
        self._save([line for event in events if (line := protocol.log_line(event)) is not None])

    def poll(self) -> None:
        now = timezone.now()
        if now.timestamp() - self._last_heartbeat >= HEARTBEAT_WRITE_S:
            self._last_heartbeat = now.timestamp()
            Job.objects.filter(pk=self.job.pk).update(heartbeat_at=now)

    def _save(self, lines: list[str]) -> None:
        job = self.job
        p = self.progress
        job.metrics = {**job.metrics, "training": p.to_dict()}
        job.progress_total = max(p.max_steps, p.step, job.progress_total)
        job.progress_done = min(p.step, job.progress_total)
        job.heartbeat_at = timezone.now()
        self._last_heartbeat = job.heartbeat_at.timestamp()
        job_log_append(job, lines)
        job.save(
            update_fields=["metrics", "progress_total", "progress_done", "heartbeat_at", "log_tail"]
        )


def _cancel_requested(job: Job) -> bool:
    return Job.objects.filter(pk=job.pk, cancel_requested=True).exists()


def _runner_log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def training_run(*, job_id: int, poll_s: float = 1.0) -> None:
    """The gpu-queue task body: run (or continue) the training job, register the result."""
    with job_running(job_id, resumable=True) as run:
        if run is None:
            return
        training = (
            TrainingJob.objects.select_related("dataset_version", "base_checkpoint")
            .filter(job_id=job_id)
            .first()
        )
        if training is None:
            raise JobFailed("this job has no training job row")
        try:
            machines = worker_machines()
        except ValueError as exc:
            raise JobFailed(f"the run cannot start: {exc}") from None
        if machines.rank != 0:
            raise JobFailed(
                f"this worker is machine {machines.rank} (TRAIN_MACHINE_RANK): training jobs "
                "are taken by the rank-0 machine's gpu worker; the others run train_follow"
            )
        try:
            config = _run_config(training)
            config.validate()
        except (ConfigError, OSError) as exc:
            raise JobFailed(f"the run cannot start: {exc}") from None
        out = Path(training.output_dir)
        config_path = out / protocol.JOB_CONFIG_FILE
        config_path.write_text(json.dumps(config.to_dict(), indent=2))
        command = launch_command(
            config_path, gpus=training.gpus, zero=training.zero or None, machines=machines
        )
        run.log(("resuming" if config.resume else "starting") + ": " + " ".join(command[1:]))
        if machines.count > 1:
            # The other machines' train_follow join when they see this (training/services/
            # machines.py); written after job-config.json, so they read this attempt's.
            run.set_metrics(launch=launch_record(machines, attempt=run.job.attempts))
            run.log(
                f"on {machines.count} machines: the others join through "
                f"{machines.main_address}:{machines.main_port} (manage.py train_follow)"
            )
        recorder = _Recorder(run.job, out / protocol.METRICS_FILE)
        outcome = supervise(
            command,
            metrics_path=out / protocol.METRICS_FILE,
            log_path=out / protocol.RUNNER_LOG,
            on_events=recorder.events,
            should_stop=lambda: _cancel_requested(run.job),
            on_poll=recorder.poll,
            poll_s=poll_s,
        )
        if outcome.stopped:
            raise JobCancelled
        if outcome.returncode != protocol.EXIT_OK:
            reason = recorder.progress.error or _runner_log_tail(out / protocol.RUNNER_LOG)
            what = "its config was refused" if outcome.returncode == EXIT_BAD_CONFIG else "failed"
            raise JobFailed(f"the training run {what} (exit {outcome.returncode}): {reason}")
        checkpoint = _register_checkpoint(training, config)
        run.log(f"checkpoint {checkpoint.name} registered")
        run.set_metrics(checkpoint_id=checkpoint.pk)
        _launch_evaluations(training, checkpoint, run.job.created_by)


def _register_checkpoint(training: TrainingJob, config: TrainConfig) -> Checkpoint:
    final = Path(training.output_dir) / protocol.FINAL_DIR
    merged = final / protocol.MERGED_DIR
    base = training.base_checkpoint
    if config.finetune == "full":
        model_path, adapter_path = checkpoint_stored_path(final), ""
    elif config.base_adapter is not None:
        # The adapter was trained on base + earlier adapter: only the merge is the policy.
        model_path, adapter_path = checkpoint_stored_path(merged), ""
    else:
        model_path, adapter_path = base.model_path, checkpoint_stored_path(final)
    existing = Checkpoint.objects.filter(training_job=training).first()
    if existing is not None:  # a rerun of the task after the row was written
        return existing
    return Checkpoint.objects.create(
        name=training.name,
        kind=Checkpoint.Kind.TRAINED,
        model_path=model_path,
        adapter_path=adapter_path,
        parent=base,
        training_job=training,
        config={
            "recipe": training.recipe,
            "train_config": config.to_dict(),
            "dataset_version": str(training.dataset_version),
            "dataset_version_id": training.dataset_version_id,
            "dataset_checksum": training.dataset_checksum,
            "code_version": training.code_version,
            "merged_path": checkpoint_stored_path(merged) if merged.is_dir() else "",
        },
    )


def _launch_evaluations(training: TrainingJob, checkpoint: Checkpoint, user: Any) -> None:
    if not training.evaluations:
        return
    for spec in training.evaluations:
        evaluation_launch(checkpoint=checkpoint, user=user, training_job=training, **spec)


def training_checkpoint(training: TrainingJob) -> Checkpoint | None:
    return Checkpoint.objects.filter(training_job=training).first()
