"""What a `run_loop` run keeps, checked and read for its page. Pure: no Django.

The record is the command's --json result (accuracy per checkpoint and task, deltas against
the start checkpoint with paired-bootstrap intervals), a breakdown per question kind with
intervals, the stages and the logps/chosen curves of training. `check_*` refuse a malformed
part with a ValueError that names where it is wrong, so that a bad record is never saved;
the readers below turn a checked record into the rows and series the page shows.

Accuracies and deltas are fractions (as `bootstrap_diff` returns them); the page writes
them in points. Roles are listed in ROLES order, never in a mapping's order: PostgreSQL's
jsonb does not keep the order keys were written in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from training.core.evaluation.metrics import _resampled_means

ROLES = ("start", "dpo", "rs", "steerlm", "dpo_round2")
ROLE_LABELS = {
    "start": "start",
    "dpo": "DPO",
    "rs": "rejection-sampling SFT",
    "steerlm": "SteerLM",
    "dpo_round2": "DPO round 2",
}
# task -> the metrics each checkpoint reports on it.
TASK_METRICS = {
    "scienceqa": ("accuracy", "n", "parse_failures"),
    "pope": ("accuracy", "f1", "n", "parse_failures"),
}
# Metrics a task may report besides those (the lab reports POPE's predicted yes-ratio).
OPTIONAL_METRICS = {"scienceqa": (), "pope": ("yes_ratio",)}
TASKS = tuple(TASK_METRICS)
RESULT_KEYS = ("wall_s", "headline", "checkpoints", "deltas")
# Question kinds in their usual order (POPE's by rising difficulty); others follow by name.
GROUP_ORDER = {
    "pope": ("random", "popular", "adversarial"),
    "scienceqa": ("count", "colour", "position"),
}


def accuracy_interval(
    scores: Sequence[float], *, seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95
) -> list[float]:
    """[low, high] of a percentile bootstrap interval of the mean of `scores` (per-item
    correctness), resampled the same way as `bootstrap_diff`."""
    import numpy as np

    if len(scores) == 0:
        raise ValueError("an interval needs at least one score")
    values = np.asarray(scores, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite numbers")
    rng = np.random.default_rng(seed)
    draws = _resampled_means(values, n_resamples, rng)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return [float(low), float(high)]


# --- checks ---------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object, not {type(value).__name__}")
    return value


def _known(keys: Any, allowed: Sequence[str], where: str) -> None:
    unknown = sorted(str(k) for k in keys if k not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown {', '.join(unknown)} (known: {', '.join(allowed)})")


def _number_or_null(value: Any, where: str) -> None:
    if value is not None and not _is_number(value):
        raise ValueError(f"{where} must be a number or null, not {value!r}")


def _fraction_or_null(value: Any, where: str) -> None:
    _number_or_null(value, where)
    if value is not None and not 0 <= value <= 1:
        raise ValueError(f"{where} must be between 0 and 1, not {value!r}")


def _count_or_null(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{where} must be a count (an integer >= 0) or null, not {value!r}")


def _interval_or_null(value: Any, where: str) -> None:
    if value is None:
        return
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
        or value[0] > value[1]
    ):
        raise ValueError(f"{where} must be [low, high] with low <= high, or null, not {value!r}")


def _check_task_metrics(task: str, metrics: Any, where: str) -> None:
    if metrics is None:
        return
    metrics = _mapping(metrics, where)
    expected = TASK_METRICS[task]
    _known(metrics, (*expected, *OPTIONAL_METRICS[task]), where)
    missing = [m for m in expected if m not in metrics]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    _fraction_or_null(metrics["accuracy"], f"{where}.accuracy")
    for name in ("f1", "yes_ratio"):
        if name in metrics:
            _fraction_or_null(metrics[name], f"{where}.{name}")
    _count_or_null(metrics["n"], f"{where}.n")
    _count_or_null(metrics["parse_failures"], f"{where}.parse_failures")


def check_result(result: Any, roles: Sequence[str] = ROLES, extra_keys: Sequence[str] = ()) -> None:
    """Refuse anything but the command's --json contract (see the module docstring).
    `roles` are the checkpoints it may list, the start first; `extra_keys` the top-level
    keys a caller adds and checks itself (the lab's costs)."""
    result = _mapping(result, "result")
    _known(result, (*RESULT_KEYS, *extra_keys), "result")
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise ValueError(f"result: missing {', '.join(missing)}")
    if not _is_number(result["wall_s"]) or result["wall_s"] < 0:
        raise ValueError(f"result.wall_s must be a number of seconds, not {result['wall_s']!r}")
    if result["headline"] not in TASKS:
        raise ValueError(f"result.headline must be one of {', '.join(TASKS)}")
    checkpoints = _mapping(result["checkpoints"], "result.checkpoints")
    _known(checkpoints, roles, "result.checkpoints")
    for role, entry in checkpoints.items():
        where = f"result.checkpoints.{role}"
        entry = _mapping(entry, where)
        _known(entry, ("name", *TASKS), where)
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ValueError(f"{where}.name must be the checkpoint's name")
        for task in TASKS:
            _check_task_metrics(task, entry.get(task), f"{where}.{task}")
    deltas = _mapping(result["deltas"], "result.deltas")
    _known(deltas, roles[1:], "result.deltas")
    for role, by_task in deltas.items():
        where = f"result.deltas.{role}"
        if role not in checkpoints:
            raise ValueError(f"{where}: a delta for a checkpoint the result does not list")
        by_task = _mapping(by_task, where)
        _known(by_task, TASKS, where)
        for task, delta in by_task.items():
            if delta is None:
                continue
            delta = _mapping(delta, f"{where}.{task}")
            _known(delta, ("delta", "ci95"), f"{where}.{task}")
            _number_or_null(delta.get("delta"), f"{where}.{task}.delta")
            _interval_or_null(delta.get("ci95"), f"{where}.{task}.ci95")


def check_breakdown(breakdown: Any, roles: Sequence[str] = ROLES) -> None:
    """{role: {task: {group: {"accuracy", "n", "ci95"}}}} (POPE's groups may add "f1" and
    "yes_ratio")."""
    breakdown = _mapping(breakdown, "breakdown")
    _known(breakdown, roles, "breakdown")
    for role, by_task in breakdown.items():
        by_task = _mapping(by_task, f"breakdown.{role}")
        _known(by_task, TASKS, f"breakdown.{role}")
        for task, groups in by_task.items():
            for group, cell in _mapping(groups, f"breakdown.{role}.{task}").items():
                where = f"breakdown.{role}.{task}.{group}"
                cell = _mapping(cell, where)
                _known(cell, ("accuracy", "n", "ci95", "f1", "yes_ratio"), where)
                for name in ("accuracy", "f1", "yes_ratio"):
                    _fraction_or_null(cell.get(name), f"{where}.{name}")
                _count_or_null(cell.get("n"), f"{where}.n")
                _interval_or_null(cell.get("ci95"), f"{where}.ci95")


def check_stages(stages: Any) -> None:
    """[[name, seconds, detail], ...]."""
    if not isinstance(stages, Sequence) or isinstance(stages, str):
        raise ValueError("stages must be a list of [name, seconds, detail]")
    for i, stage in enumerate(stages):
        if (
            not isinstance(stage, Sequence)
            or isinstance(stage, str)
            or len(stage) != 3
            or not isinstance(stage[0], str)
            or not _is_number(stage[1])
            or not isinstance(stage[2], str)
        ):
            raise ValueError(f"stages[{i}] must be [name, seconds, detail], not {stage!r}")


def check_logps(logps: Any, roles: Sequence[str] = ROLES) -> None:
    """{role: [[step, logps_chosen, logps_rejected or null], ...]}."""
    logps = _mapping(logps, "logps")
    _known(logps, roles, "logps")
    for role, points in logps.items():
        if not isinstance(points, Sequence) or isinstance(points, str):
            raise ValueError(f"logps.{role} must be a list of [step, chosen, rejected]")
        for i, point in enumerate(points):
            if (
                not isinstance(point, Sequence)
                or isinstance(point, str)
                or len(point) != 3
                or not _is_number(point[0])
                or not _is_number(point[1])
                or not (point[2] is None or _is_number(point[2]))
            ):
                raise ValueError(f"logps.{role}[{i}] must be [step, chosen, rejected or null]")


# --- reading a checked record for the page --------------------------------------------------


def points(value: float | None) -> str:
    """A delta in points with its sign: 0.123 -> "+12.3"."""
    return "n/a" if value is None else f"{100 * value:+.1f}"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _delta(result: Mapping[str, Any], role: str, task: str) -> Mapping[str, Any] | None:
    return ((result.get("deltas") or {}).get(role) or {}).get(task)


def delta_text(delta: Mapping[str, Any] | None) -> str:
    """The delta as the page writes it, "+12.3 points, 95% CI [+8.1, +16.0]"; "n/a" where
    the run produced no number."""
    if delta is None or delta.get("delta") is None:
        return "n/a"
    text = f"{points(delta['delta'])} points"
    ci = delta.get("ci95")
    if ci is not None:
        text += f", 95% CI [{points(ci[0])}, {points(ci[1])}]"
    return text


def roles_in(result: Mapping[str, Any], roles: Sequence[str] = ROLES) -> list[str]:
    return [role for role in roles if role in (result.get("checkpoints") or {})]


def headline_sentences(
    result: Mapping[str, Any],
    roles: Sequence[str] = ROLES,
    labels: Mapping[str, str] = ROLE_LABELS,
) -> list[str]:
    """One sentence per trained role: its delta against start on the headline task."""
    task = str(result.get("headline", ""))
    deltas = result.get("deltas") or {}
    return [
        f"{labels[role]} vs start on {task}: {delta_text(_delta(result, role, task))}"
        for role in roles[1:]
        if role in deltas
    ]


def headline_delta(result: Mapping[str, Any], role: str = "dpo") -> str:
    """The role's delta on the headline task, for the list of runs."""
    if not result:
        return ""
    return delta_text(_delta(result, role, result.get("headline", "")))


def _cells(metrics: Mapping[str, Any] | None) -> dict[str, str]:
    """One task's numbers as the table writes them ("—" where there is none)."""
    metrics = metrics or {}
    f1 = metrics.get("f1")

    def count(name: str) -> str:
        return "—" if metrics.get(name) is None else str(metrics[name])

    yes_ratio = metrics.get("yes_ratio")
    return {
        "accuracy": "—" if metrics.get("accuracy") is None else percent(metrics["accuracy"]),
        "f1": "—" if f1 is None else f"{f1:.3f}",
        "yes_ratio": "—" if yes_ratio is None else f"{yes_ratio:.2f}",
        "n": count("n"),
        "parse_failures": count("parse_failures"),
    }


def result_rows(
    result: Mapping[str, Any],
    roles: Sequence[str] = ROLES,
    labels: Mapping[str, str] = ROLE_LABELS,
) -> list[dict[str, Any]]:
    """A row per role: its checkpoint's name, metrics per task, and deltas per task."""
    rows = []
    for role in roles_in(result, roles):
        entry = result["checkpoints"][role]
        rows.append(
            {
                "role": role,
                "label": labels[role],
                "name": entry["name"],
                "tasks": {task: _cells(entry.get(task)) for task in TASKS},
                "deltas": {
                    task: "" if role == "start" else delta_text(_delta(result, role, task))
                    for task in TASKS
                },
            }
        )
    return rows


def _group_key(task: str, group: str) -> tuple[int, str]:
    order = GROUP_ORDER.get(task, ())
    return (order.index(group) if group in order else len(order), group)


def breakdown_series(
    breakdown: Mapping[str, Any],
    task: str,
    all_roles: Sequence[str] = ROLES,
    labels: Mapping[str, str] = ROLE_LABELS,
) -> tuple[list[str], list[str], list[list[float | None]], list[list[list[float] | None]]]:
    """(groups, roles, values[role][group], intervals[role][group]) of one task, for a
    grouped bar chart; ([], [], [], []) when no role has a breakdown for it."""
    roles = [role for role in all_roles if (breakdown.get(role) or {}).get(task)]
    groups = sorted(
        {group for role in roles for group in breakdown[role][task]},
        key=lambda group: _group_key(task, group),
    )
    values, intervals = [], []
    for role in roles:
        cells = breakdown[role][task]
        values.append([(cells.get(g) or {}).get("accuracy") for g in groups])
        intervals.append([(cells.get(g) or {}).get("ci95") for g in groups])
    return groups, [labels[r] for r in roles], values, intervals


def logps_series(
    logps: Mapping[str, Any],
    roles: Sequence[str] = ROLES,
    labels: Mapping[str, str] = ROLE_LABELS,
) -> list[tuple[str, dict[str, list[tuple[float, float]]]]]:
    """Per trained role, its logps/chosen curve (and logps/rejected where it has one)."""
    charts = []
    for role in roles:
        rows = logps.get(role) or []
        series = {
            "chosen": [(step, chosen) for step, chosen, _ in rows],
            "rejected": [(step, rej) for step, _, rej in rows if rej is not None],
        }
        series = {name: values for name, values in series.items() if values}
        if series:
            charts.append((labels[role], series))
    return charts


def wall_seconds(result: Mapping[str, Any], stages: Sequence[Sequence[Any]]) -> float:
    """The run's wall time: the result's, else (a failed or running run) its stages' sum."""
    if result and _is_number(result.get("wall_s")):
        return float(result["wall_s"])
    return float(sum(stage[1] for stage in stages))
