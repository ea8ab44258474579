"""The runner protocol: what `python -m training.run` (and the recipes inside it) writes,
and what the job supervisor and the training service read back. One module, so that a
writer and its readers cannot drift apart. Pure: no Django and no torch, because the
runner imports it before anything heavy and the supervisor (workers/) imports it without
importing the runner.

A run's output_dir:
    metrics.jsonl      the events below, one JSON object a line (under `accelerate launch`,
                       rank N > 0 writes metrics.rank{N}.jsonl, so one run's steps are read once)
    runner.log         the runner's stdout and stderr, written by the supervisor
    job-config.json    the TrainConfig the training service hands to the runner
    train_config.json  the config the runner trained with; also in checkpoint-N/ and final/
    final/             the adapter (or full model) and processor; final/merged/ when merged

Events, in the order a run writes them:
- {"event": "started", "time", "recipe", "pid", "resumed_from", "config"}
- {"event": "ref_logps", "split", "rows", "cached", "seconds", "path"} (DPO; no "time")
- {"event": "train_begin", "time", "step", "max_steps"} when the Trainer starts (or resumes)
- {"event": "metrics", "time", "step", "epoch", "loss", "learning_rate", "tokens_per_s", ...}
  one per Trainer log: TRL's keys as logged (DPO: rewards/chosen, rewards/rejected,
  rewards/margins, rewards/accuracies, ...), evaluation keys prefixed "eval_"
- {"event": "heartbeat", "time", "step"} at least every heartbeat_s seconds, from a thread
- {"event": "orphaned", "time", "supervisor_pid"} when the supervisor died (then "failed")
- {"event": "finished", "time", "step", "final_dir", "train", "eval"} and exit code 0, or
  {"event": "failed", "time", "error", "traceback"} and EXIT_FAILED (EXIT_BAD_CONFIG for a
  config refused before training)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

# The checkout the runner runs in (its cwd, so that `-m training.run` resolves) and git
# reads the code version from: training/core/protocol.py is three levels below it.
REPO_ROOT = Path(__file__).resolve().parents[2]

RUNNER_MODULE = "training.run"

# --- files in a run's output_dir -------------------------------------------------------------
METRICS_FILE = "metrics.jsonl"
RUNNER_LOG = "runner.log"
JOB_CONFIG_FILE = "job-config.json"
CONFIG_FILE = "train_config.json"
FINAL_DIR = "final"
TENSORBOARD_DIR = "tensorboard"  # OUTPUT_DIR/tensorboard: the run's TensorBoard event files
MERGED_DIR = "merged"  # inside FINAL_DIR

# --- exit codes ------------------------------------------------------------------------------
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2

# --- environment -----------------------------------------------------------------------------
# The supervisor's pid, set by the supervisor in the runner's environment: the runner stops
# itself when its parent is no longer that process.
SUPERVISOR_PID_ENV = "STUDIO_SUPERVISOR_PID"
# The process's rank, set by `accelerate launch` for each of its processes.
RANK_ENV = "RANK"


class Event(StrEnum):
    STARTED = "started"
    REF_LOGPS = "ref_logps"
    TRAIN_BEGIN = "train_begin"
    METRICS = "metrics"
    HEARTBEAT = "heartbeat"
    ORPHANED = "orphaned"
    FINISHED = "finished"
    FAILED = "failed"


# --- writing ---------------------------------------------------------------------------------


def metrics_file_name(environ: Mapping[str, str] | None = None) -> str:
    """metrics.jsonl for the main process, metrics.rank{N}.jsonl for rank N > 0."""
    rank = int((os.environ if environ is None else environ).get(RANK_ENV, "0") or 0)
    return METRICS_FILE if rank == 0 else f"metrics.rank{rank}.jsonl"


def record(event: Event, /, *, timed: bool = True, **fields: Any) -> dict[str, Any]:
    """One event as written: "event" first, then "time" (wall clock, seconds), then `fields`.
    timed=False only for ref_logps, which has never carried a time (the fold's clock, and so
    its ETA, moves with training events only)."""
    head: dict[str, Any] = {"event": event.value}
    if timed:
        head["time"] = time.time()
    return {**head, **fields}


def encode(event_record: Mapping[str, Any]) -> str:
    """One line of metrics.jsonl (newline included); values JSON cannot hold become text."""
    return json.dumps(event_record, default=str) + "\n"


def write(stream: TextIO, event_record: Mapping[str, Any]) -> None:
    """Append one record and flush it, so that a reader sees the line at once."""
    stream.write(encode(event_record))
    stream.flush()


def emit(stream: TextIO, event: Event, /, **fields: Any) -> dict[str, Any]:
    """Write the event `record(event, **fields)` to `stream`; returns the record."""
    event_record = record(event, **fields)
    write(stream, event_record)
    return event_record


# --- reading ---------------------------------------------------------------------------------


def decode_lines(data: bytes) -> list[dict[str, Any]]:
    """The events in `data`, complete lines only: a line that is not a JSON object (torn by
    a killed writer) is skipped, since the lines after it are whole again."""
    events = []
    for line in data.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in a metrics file so far ([] when it does not exist yet); a last line
    still being written is left out."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return decode_lines(data[: data.rfind(b"\n") + 1])


def log_line(event: Mapping[str, Any]) -> str | None:
    """What the job's log says about an event, or None for the routine ones."""
    kind = event.get("event")
    if kind == Event.STARTED:
        resumed = event.get("resumed_from")
        where = f", resuming from {Path(resumed).name}" if resumed else ""
        return f"runner started (pid {event.get('pid')}){where}"
    if kind == Event.REF_LOGPS:
        how = (
            "read from the cache"
            if event.get("cached")
            else f"computed in {event.get('seconds')} s"
        )
        return f"reference log-probs ({event.get('split')}, {event.get('rows')} rows): {how}"
    if kind == Event.FAILED:
        return f"runner failed: {event.get('error')}"
    if kind == Event.ORPHANED:
        return "runner lost its supervisor and stopped"
    return None


# --- the fold: events into what the job page shows -------------------------------------------

HISTORY_LIMIT = 600  # points kept per curve: enough for a chart, small enough for a JSON row
# Keys of a training log worth a curve; everything else stays in `latest` only.
CURVE_KEYS = (
    "loss",
    "learning_rate",
    "grad_norm",
    "tokens_per_s",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    # Watched in DPO: when pairs differ in a short answer, plain DPO can push both down.
    "logps/chosen",
    "logps/rejected",
    # GRPO: its reward's mean and spread over each group, and how long the answers run.
    "reward",
    "reward_std",
    "completions/mean_length",
    # Online / mixed DPO: the ranker's score of the fresh samples, their spread, the pairs
    # each step made, and the share of rows that trained on their stored pair.
    "online/reward",
    "online/reward_std",
    "online/pairs",
    "online/offline_fraction",
    "online/generated_tokens",
)


@dataclass
class TrainingProgress:
    """The job's view of a run, rebuilt from metrics events and kept in Job.metrics."""

    step: int = 0
    max_steps: int = 0
    epoch: float | None = None
    latest: dict[str, Any] = field(default_factory=dict)
    eval_latest: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    ref_logps: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    final: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # (time, step) when this attempt's training began: the ETA's rate counts from here
    rate_origin: tuple[float, int] | None = None
    last_time: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainingProgress:
        data = dict(data or {})
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("rate_origin") is not None:
            values["rate_origin"] = tuple(values["rate_origin"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["eta_s"] = self.eta_s()
        out["steps_per_s"] = self.steps_per_s()
        return out

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        now = event.get("time")
        if isinstance(now, int | float):
            self.last_time = float(now)
        if kind == Event.STARTED:
            self.resumed_from = event.get("resumed_from")
            self.error = None
        elif kind == Event.TRAIN_BEGIN:
            self.step = int(event.get("step") or 0)
            self.max_steps = int(event.get("max_steps") or 0)
            # Points after the step a resume restarts from were trained again: drop them.
            self.history = [p for p in self.history if p["step"] <= self.step]
            self.eval_history = [p for p in self.eval_history if p["step"] <= self.step]
            self.rate_origin = (float(now), self.step) if isinstance(now, int | float) else None
        elif kind == Event.METRICS:
            self._metrics(event)
        elif kind == Event.HEARTBEAT:
            self.step = max(self.step, int(event.get("step") or 0))
        elif kind == Event.REF_LOGPS:
            self.ref_logps.append({k: event.get(k) for k in ("split", "rows", "cached", "seconds")})
        elif kind == Event.FINISHED:
            self.final = {"train": event.get("train") or {}, "eval": event.get("eval") or {}}
            self.final["final_dir"] = event.get("final_dir")
            self.step = int(event.get("step") or self.step)
        elif kind == Event.FAILED:
            self.error = event.get("error")

    def _metrics(self, event: Mapping[str, Any]) -> None:
        step = int(event.get("step") or 0)
        self.step = max(self.step, step)
        self.epoch = event.get("epoch")
        values = {
            k: v
            for k, v in event.items()
            if k not in ("event", "time", "step", "epoch") and v is not None
        }
        if any(k.startswith("eval_") for k in values):
            self.eval_latest = values
            self.eval_history.append({"step": step, **values})
            self.eval_history = _thin(self.eval_history)
        elif "loss" in values:
            self.latest = values
            point = {"step": step, **{k: values[k] for k in CURVE_KEYS if k in values}}
            self.history.append(point)
            self.history = _thin(self.history)
        else:  # the Trainer's closing summary (train_runtime, train_loss, ...)
            self.final.setdefault("summary", {}).update(values)

    def steps_per_s(self) -> float | None:
        if self.rate_origin is None or self.last_time is None:
            return None
        start_time, start_step = self.rate_origin
        if self.step <= start_step or self.last_time <= start_time:
            return None
        return (self.step - start_step) / (self.last_time - start_time)

    def eta_s(self) -> float | None:
        rate = self.steps_per_s()
        if rate is None or not self.max_steps or self.final:
            return None
        return max(self.max_steps - self.step, 0) / rate


def fold(
    events: list[dict[str, Any]], progress: TrainingProgress | None = None
) -> TrainingProgress:
    """`progress` (or a fresh one) after feeding it `events` in order."""
    progress = progress if progress is not None else TrainingProgress()
    for event in events:
        progress.feed(event)
    return progress


def _thin(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other point once the curve is over the limit (the last one always kept)."""
    if len(points) <= HISTORY_LIMIT:
        return points
    return [*points[:-1:2], points[-1]]
