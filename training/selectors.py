"""Reads for the training pages: charts of a run, the checkpoint lineage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils.safestring import SafeString, mark_safe

from common.charts import lines_svg
from training.models import Checkpoint, TrainingJob

# Curves per chart: train and eval on one chart where they share a scale.
CHARTS = (
    ("Loss", (("loss", "train"), ("eval_loss", "eval"))),
    ("Reward margin", (("rewards/margins", "train"), ("eval_rewards/margins", "eval"))),
    ("Reward accuracy", (("rewards/accuracies", "train"), ("eval_rewards/accuracies", "eval"))),
    ("Rewards", (("rewards/chosen", "chosen"), ("rewards/rejected", "rejected"))),
    ("Learning rate", (("learning_rate", "lr"),)),
    ("GRPO reward", (("reward", "mean"), ("reward_std", "spread"))),
    ("Completion length", (("completions/mean_length", "tokens"),)),
    ("Online samples' reward", (("online/reward", "mean"), ("online/reward_std", "spread"))),
    ("Online pairs per step", (("online/pairs", "pairs"),)),
)


def training_charts(metrics: dict[str, Any]) -> list[SafeString]:
    """SVG line charts of the run's curves (only those it has points for)."""
    progress = metrics.get("training") or {}
    points = [*progress.get("history", []), *progress.get("eval_history", [])]
    charts = []
    for title, keys in CHARTS:
        series = {
            label: [(p["step"], p[key]) for p in points if isinstance(p.get(key), int | float)]
            for key, label in keys
        }
        series = {label: values for label, values in series.items() if values}
        if series:
            # lines_svg escapes every label and number it writes.
            charts.append(mark_safe(lines_svg(series, title)))  # noqa: S308
    return charts


def training_job_detail(training_id: int) -> TrainingJob:
    return TrainingJob.objects.select_related(
        "job", "dataset_version", "base_checkpoint", "created_by"
    ).get(pk=training_id)


@dataclass
class LineageNode:
    checkpoint: Checkpoint
    children: list[LineageNode] = field(default_factory=list)


def checkpoint_lineage() -> list[LineageNode]:
    """Base checkpoints with their trained descendants (base -> job -> checkpoint ...)."""
    checkpoints = list(
        Checkpoint.objects.select_related(
            "training_job__dataset_version", "training_job__job"
        ).order_by("created_at")
    )
    nodes = {c.pk: LineageNode(c) for c in checkpoints}
    roots = []
    for c in checkpoints:
        if c.parent_id is not None and c.parent_id in nodes:
            nodes[c.parent_id].children.append(nodes[c.pk])
        else:
            roots.append(nodes[c.pk])
    return roots


def flat_lineage() -> list[tuple[int, LineageNode]]:
    """The lineage as (depth, node) rows in tree order, for a plain template loop."""
    rows: list[tuple[int, LineageNode]] = []

    def walk(node: LineageNode, depth: int) -> None:
        rows.append((depth, node))
        for child in node.children:
            walk(child, depth + 1)

    for root in checkpoint_lineage():
        walk(root, 0)
    return rows


def recent_training_jobs(limit: int = 50) -> list[TrainingJob]:
    return list(
        TrainingJob.objects.select_related("job", "dataset_version", "base_checkpoint").order_by(
            "-created_at"
        )[:limit]
    )


def training_tracking(training: TrainingJob) -> dict[str, Any]:
    """Where the run's metrics also went: its TensorBoard folder, and the MLflow server the
    runner was pointed at (MLFLOW_TRACKING_URI, read from this process's environment: the
    workers share it)."""
    import os
    from pathlib import Path

    from training.core.protocol import TENSORBOARD_DIR

    report_to = (training.config or {}).get("report_to", ["tensorboard"])
    out: dict[str, Any] = {}
    if "tensorboard" in report_to:
        folder = Path(training.output_dir) / TENSORBOARD_DIR
        out["tensorboard"] = str(folder)
        out["tensorboard_exists"] = folder.is_dir() and any(folder.rglob("events.out.tfevents*"))
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:  # the runner adds MLflow by itself when this is set
        out["mlflow"] = uri
        out["mlflow_experiment"] = os.environ.get("MLFLOW_EXPERIMENT_NAME", "preference-studio")
    return out
