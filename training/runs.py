"""Training runs as jobs launch them: the command (`python -m training.run`, or
`accelerate launch` around it for several GPUs or DeepSpeed ZeRO) and the fold of the
runner's metrics events into what the job page shows. Pure: no Django. The process itself
is supervised by workers/supervisor.py.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = REPO_ROOT / "configs" / "accelerate"
# `zero` choices: the accelerate config file each one launches with.
ZERO_STAGES = {
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
    "zero3_offload": "deepspeed_zero3_offload.yaml",
}
HISTORY_LIMIT = 600  # points kept per curve: enough for a chart, small enough for a JSON row


def launch_command(
    config_path: str | os.PathLike[str],
    *,
    gpus: int = 1,
    zero: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command that trains `config_path`: the runner itself for one device, or
    `accelerate launch` (multi-GPU data parallel, DeepSpeed ZeRO when asked) around it."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}")
    if zero is not None and zero not in ZERO_STAGES:
        raise ValueError(f"unknown zero stage {zero!r} (known: {', '.join(ZERO_STAGES)})")
    if gpus == 1 and zero is None:
        return [python, "-m", "training.run", str(config_path)]
    command = [python, "-m", "accelerate.commands.launch", "--num_processes", str(gpus)]
    if zero is not None:
        command += ["--config_file", str(ACCELERATE_CONFIGS / ZERO_STAGES[zero])]
    elif gpus > 1:
        command += ["--multi_gpu"]
    return [*command, "--module", "training.run", str(config_path)]


# ---------------------------------------------------------------------------------------
# Folding events into what the job page shows

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

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        now = event.get("time")
        if isinstance(now, int | float):
            self.last_time = float(now)
        if kind == "started":
            self.resumed_from = event.get("resumed_from")
            self.error = None
        elif kind == "train_begin":
            self.step = int(event.get("step") or 0)
            self.max_steps = int(event.get("max_steps") or 0)
            # Points after the step a resume restarts from were trained again: drop them.
            self.history = [p for p in self.history if p["step"] <= self.step]
            self.eval_history = [p for p in self.eval_history if p["step"] <= self.step]
            self.rate_origin = (float(now), self.step) if isinstance(now, int | float) else None
        elif kind == "metrics":
            self._metrics(event)
        elif kind == "heartbeat":
            self.step = max(self.step, int(event.get("step") or 0))
        elif kind == "ref_logps":
            self.ref_logps.append({k: event.get(k) for k in ("split", "rows", "cached", "seconds")})
        elif kind == "finished":
            self.final = {"train": event.get("train") or {}, "eval": event.get("eval") or {}}
            self.final["final_dir"] = event.get("final_dir")
            self.step = int(event.get("step") or self.step)
        elif kind == "failed":
            self.error = event.get("error")

    def _metrics(self, event: dict[str, Any]) -> None:
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


def _thin(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other point once the curve is over the limit (the last one always kept)."""
    if len(points) <= HISTORY_LIMIT:
        return points
    return [*points[:-1:2], points[-1]]
